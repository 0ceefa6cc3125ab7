// Queue one WeChat message with Herald and wait for its outcome (Java, JDBC).
//
// Inserts a row into msg_list with plain SQL, then polls that row until Herald has sent
// it (or failed it) and prints what Herald wrote. Copy the parts you need:
//
//     javac -d out HeraldExample.java
//     DATABASE_URL=postgresql://app@127.0.0.1/herald \
//         java -cp out:/usr/share/java/gson.jar:/usr/share/java/postgresql.jar HeraldExample --openid oUser...
//
// The URL is the one in Herald's config.yaml: sqlite:///relative.db, sqlite:////abs.db,
// postgresql://user:password@host:5432/db or mysql://user:password@host:3306/db; it
// becomes a JDBC URL below. Drivers (Debian 12): libpostgresql-jdbc-java,
// libmariadb-java, libxerial-sqlite-jdbc-java; plain JDBC, nothing from them is named.
// JSON: Gson (libgoogle-gson-java).

import com.google.gson.Gson;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

public class HeraldExample {
    static final List<String> SETTLED = List.of("success", "fail", "cancelled"); // wait and sending are not
    static final List<String> FIELDS = List.of("status", "errcode", "error", "msgid", "receipt");

    final String engine;
    final Connection conn;

    HeraldExample(String url) throws SQLException {
        if (url.startsWith("sqlite:///")) {
            // sqlite:///herald.db is relative, sqlite:////var/lib/herald/herald.db absolute.
            // busy_timeout: Herald writes to the same file; wait for its lock instead of
            // failing at once with "database is locked".
            Properties props = new Properties();
            props.setProperty("busy_timeout", "10000");
            engine = "sqlite";
            conn = DriverManager.getConnection("jdbc:sqlite:" + url.substring("sqlite:///".length()), props);
            return;
        }
        URI u = URI.create(url);
        Properties props = new Properties();
        String userInfo = u.getRawUserInfo();
        if (userInfo != null) {
            String[] parts = userInfo.split(":", 2);
            props.setProperty("user", URLDecoder.decode(parts[0], StandardCharsets.UTF_8));
            if (parts.length == 2) {
                props.setProperty("password", URLDecoder.decode(parts[1], StandardCharsets.UTF_8));
            }
        }
        String host = u.getHost() == null ? "127.0.0.1" : u.getHost();
        switch (u.getScheme()) {
            case "postgresql", "postgres" -> {
                engine = "postgres";
                int port = u.getPort() < 0 ? 5432 : u.getPort();
                conn = DriverManager.getConnection("jdbc:postgresql://" + host + ":" + port + u.getPath(), props);
            }
            case "mysql" -> {
                engine = "mysql";
                int port = u.getPort() < 0 ? 3306 : u.getPort();
                conn = DriverManager.getConnection("jdbc:mariadb://" + host + ":" + port + u.getPath(), props);
                try (Statement st = conn.createStatement()) {
                    // TIMESTAMP columns convert from the session's zone: make it UTC.
                    st.execute("SET time_zone = '+00:00'");
                }
            }
            default -> throw new IllegalArgumentException("unsupported database URL scheme " + u.getScheme());
        }
        // JDBC connections start in auto-commit: each poll below sees Herald's latest write
    }

    /** The INSERT's id. */
    long insert(Map<String, Object> row) throws SQLException {
        String sql = "INSERT INTO msg_list (" + String.join(", ", row.keySet()) + ") VALUES ("
                + String.join(", ", java.util.Collections.nCopies(row.size(), "?")) + ")";
        if (engine.equals("postgres")) {
            try (PreparedStatement ps = conn.prepareStatement(sql + " RETURNING id")) {
                bind(ps, row);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    return rs.getLong(1);
                }
            }
        }
        try (PreparedStatement ps = conn.prepareStatement(sql, Statement.RETURN_GENERATED_KEYS)) {
            bind(ps, row);
            ps.executeUpdate();
            try (ResultSet rs = ps.getGeneratedKeys()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    static void bind(PreparedStatement ps, Map<String, Object> row) throws SQLException {
        int i = 1;
        for (Object value : row.values()) {
            ps.setObject(i++, value);
        }
    }

    static boolean isUniqueViolation(SQLException e) {
        return "23505".equals(e.getSQLState())                                   // PostgreSQL
                || e.getErrorCode() == 1062                                      // MariaDB/MySQL ER_DUP_ENTRY
                || String.valueOf(e.getMessage()).contains("UNIQUE constraint failed"); // SQLite
    }

    /** {id, inserted}: a second insert with the same dedup_key is rejected by the database's
     *  UNIQUE constraint; that is the earlier row, so follow it instead. */
    long[] queue(Map<String, Object> row) throws SQLException {
        try {
            return new long[] {insert(row), 1};
        } catch (SQLException e) {
            if (!row.containsKey("dedup_key") || !isUniqueViolation(e)) {
                throw e;
            }
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT id FROM msg_list WHERE dedup_key = ?")) {
            ps.setString(1, (String) row.get("dedup_key"));
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) { // purged meanwhile: nothing to follow
                    throw new IllegalStateException("dedup_key " + row.get("dedup_key") + " was taken, and its row is gone");
                }
                return new long[] {rs.getLong(1), 0};
            }
        }
    }

    Map<String, String> outcome(long id) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT status, errcode, error, msgid, receipt FROM msg_list WHERE id = ?")) {
            ps.setLong(1, id);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) {
                    throw new IllegalStateException("row " + id + " is gone (purged?)");
                }
                Map<String, String> out = new LinkedHashMap<>();
                for (String field : FIELDS) {
                    // getString for all: msgid is text because WeChat's ids exceed 2^53;
                    // getDouble would lose digits, and a long would break in the browser.
                    out.put(field, rs.getString(field));
                }
                return out;
            }
        }
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 == argv.length) {
                System.err.println("usage: HeraldExample [--database URL] [--template T] [--openid O] "
                        + "[--params JSON] [--dedup-key K] [--delay S] [--timeout S]");
                System.exit(64);
            }
            opt.put(argv[i].substring(2), argv[++i]);
        }
        String url = opt.getOrDefault("database", System.getenv("DATABASE_URL"));
        if (url == null || url.isEmpty()) {
            System.err.println("give --database URL or set DATABASE_URL");
            System.exit(64);
        }
        // params is text holding JSON: build it with a JSON encoder (Gson here, Jackson is as
        // good), never by gluing strings. Send display values as strings ("12.50", not 12.5)
        // so they show as written.
        String params = opt.getOrDefault("params",
                new Gson().toJson(List.of("拿铁 Latte", "12.50", "已发货", "谢谢惠顾")));
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("template", opt.getOrDefault("template", "order_status"));
        row.put("openid", opt.getOrDefault("openid", "oExampleOpenid0000000000000"));
        row.put("params", params);
        if (opt.containsKey("dedup-key")) {
            row.put("dedup_key", opt.get("dedup-key"));
        }

        HeraldExample herald = new HeraldExample(url);
        double delay = Double.parseDouble(opt.getOrDefault("delay", "0"));
        if (delay > 0) {
            // send_at is UTC: OffsetDateTime.now(ZoneOffset.UTC), never LocalDateTime.now()
            // or a java.sql.Timestamp (both follow the JVM's zone).
            OffsetDateTime due = OffsetDateTime.now(ZoneOffset.UTC).plusNanos((long) (delay * 1e9));
            // PostgreSQL's driver binds an OffsetDateTime as timestamptz (a String would be
            // refused: "expression is of type character varying"). SQLite and MariaDB (in
            // the UTC session above) take UTC as 'yyyy-MM-dd HH:mm:ss'.
            row.put("send_at", herald.engine.equals("postgres") ? due
                    : due.format(DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss")));
        }

        long[] queued = herald.queue(row);
        long id = queued[0];
        System.out.println(queued[1] == 1 ? "row: " + id + " (inserted)"
                : "row: " + id + " (dedup_key " + row.get("dedup_key") + " was already queued)");

        double timeout = Double.parseDouble(opt.getOrDefault("timeout", "120"));
        long deadline = System.nanoTime() + (long) (timeout * 1e9);
        Map<String, String> out;
        while (true) {
            out = herald.outcome(id);
            if (SETTLED.contains(out.get("status")) || System.nanoTime() >= deadline) {
                break;
            }
            Thread.sleep(500);
        }
        herald.conn.close();
        for (String field : FIELDS) {
            String value = out.get(field);
            System.out.println(field + ": " + (value == null ? "NULL" : value));
        }
        // receipt stays NULL until WeChat reports delivery (only with the push set up)
        String status = out.get("status");
        if (status.equals("success")) {
            System.exit(0);
        }
        if (SETTLED.contains(status)) {
            System.exit(3);
        }
        System.err.println("row " + id + " still " + status + " after " + opt.getOrDefault("timeout", "120") + " s");
        System.exit(4);
    }
}
