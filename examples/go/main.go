// Queue one WeChat message with Herald and wait for its outcome (Go, database/sql).
//
// Inserts a row into msg_list with plain SQL, then polls that row until Herald has sent
// it (or failed it) and prints what Herald wrote. Copy the parts you need:
//
//	DATABASE_URL=postgresql://app@127.0.0.1/herald go run . --openid oUser...
//
// The URL is the one in Herald's config.yaml: sqlite:///relative.db, sqlite:////abs.db,
// postgresql://user:password@host:5432/db or mysql://user:password@host:3306/db.
// Drivers: github.com/lib/pq, github.com/go-sql-driver/mysql, github.com/mattn/go-sqlite3
// (cgo). This file links all three; an application keeps the one it uses.
package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/lib/pq"
	"github.com/mattn/go-sqlite3"
)

var settled = map[string]bool{"success": true, "fail": true, "cancelled": true} // wait and sending are not final

type herald struct {
	engine string
	db     *sql.DB
}

// open turns a Herald database URL into the driver's DSN. database/sql is a pool: a
// session setting must be in the DSN, since a SET runs on one connection only.
func open(rawURL string) (*herald, error) {
	if strings.HasPrefix(rawURL, "sqlite:///") {
		// sqlite:///herald.db is relative, sqlite:////var/lib/herald/herald.db absolute.
		// _busy_timeout: Herald writes to the same file; wait for its lock instead of
		// failing at once with "database is locked".
		db, err := sql.Open("sqlite3", "file:"+strings.TrimPrefix(rawURL, "sqlite:///")+"?_busy_timeout=10000")
		return &herald{"sqlite", db}, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "postgresql", "postgres":
		// lib/pq takes the URL as it is. Unlike libpq (psql, psycopg2, Herald) it
		// defaults to sslmode=require: "pq: SSL is not enabled on the server" from a
		// server without TLS means adding ?sslmode=disable (on loopback only; use
		// verify-full across a network).
		db, err := sql.Open("postgres", rawURL)
		return &herald{"postgres", db}, err
	case "mysql":
		cfg := mysql.NewConfig()
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
		cfg.Net = "tcp"
		cfg.Addr = u.Host
		if u.Port() == "" {
			cfg.Addr = u.Host + ":3306"
		}
		cfg.DBName = strings.TrimPrefix(u.Path, "/")
		// TIMESTAMP columns convert from the session's zone: make it UTC, and have the
		// driver write time.Time values in UTC too. utf8mb4: Chinese text and emoji survive.
		cfg.Params = map[string]string{"time_zone": "'+00:00'", "charset": "utf8mb4"}
		cfg.Loc = time.UTC
		db, err := sql.Open("mysql", cfg.FormatDSN())
		return &herald{"mysql", db}, err
	}
	return nil, fmt.Errorf("unsupported database URL scheme %q", u.Scheme)
}

// marks: ?, ? for SQLite and MySQL; $1, $2 for PostgreSQL.
func (h *herald) marks(sql string) string {
	if h.engine != "postgres" {
		return sql
	}
	n := 0
	var b strings.Builder
	for _, r := range sql {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (h *herald) insert(names []string, values []any) (int64, error) {
	q := h.marks("INSERT INTO msg_list (" + strings.Join(names, ", ") + ") VALUES (" +
		strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ") + ")")
	if h.engine == "postgres" {
		// lib/pq has no LastInsertId: ask for the id
		var id int64
		err := h.db.QueryRow(q+" RETURNING id", values...).Scan(&id)
		return id, err
	}
	res, err := h.db.Exec(q, values...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

func isUniqueViolation(err error) bool {
	var pqErr *pq.Error
	var myErr *mysql.MySQLError
	var liteErr sqlite3.Error
	switch {
	case errors.As(err, &pqErr):
		return pqErr.Code == "23505"
	case errors.As(err, &myErr):
		return myErr.Number == 1062 // ER_DUP_ENTRY
	case errors.As(err, &liteErr):
		return liteErr.ExtendedCode == sqlite3.ErrConstraintUnique
	}
	return false
}

// queue returns (id, inserted): a second insert with the same dedup_key is rejected by the
// database's UNIQUE constraint; that is the earlier row, so follow it instead.
func (h *herald) queue(names []string, values []any, dedupKey string) (int64, bool, error) {
	id, err := h.insert(names, values)
	if err == nil {
		return id, true, nil
	}
	if dedupKey == "" || !isUniqueViolation(err) {
		return 0, false, err
	}
	err = h.db.QueryRow(h.marks("SELECT id FROM msg_list WHERE dedup_key = ?"), dedupKey).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) { // purged meanwhile: nothing to follow
		return 0, false, fmt.Errorf("dedup_key %s was taken, and its row is gone", dedupKey)
	}
	return id, false, err
}

var fields = []string{"status", "errcode", "error", "msgid", "receipt"}

func (h *herald) outcome(id int64) (map[string]sql.NullString, error) {
	// Scan everything as text. msgid above all: WeChat's ids exceed 2^53, so a float64
	// loses digits (and so does JavaScript, if you hand it on as a JSON number).
	var v [5]sql.NullString
	err := h.db.QueryRow(h.marks("SELECT status, errcode, error, msgid, receipt FROM msg_list WHERE id = ?"), id).
		Scan(&v[0], &v[1], &v[2], &v[3], &v[4])
	out := map[string]sql.NullString{}
	for i, f := range fields {
		out[f] = v[i]
	}
	return out, err
}

func run() (int, error) {
	database := flag.String("database", os.Getenv("DATABASE_URL"), "database URL (default: $DATABASE_URL)")
	template := flag.String("template", "order_status", "template name")
	openid := flag.String("openid", "oExampleOpenid0000000000000", "recipient")
	params := flag.String("params", "", "params as a JSON array or object (default: an order_status example)")
	dedupKey := flag.String("dedup-key", "", "at most one row per key, ever")
	delay := flag.Float64("delay", 0, "send no sooner than this many seconds from now (sets send_at, in UTC)")
	timeout := flag.Float64("timeout", 120, "seconds to wait for the outcome")
	flag.Parse()
	if *database == "" {
		fmt.Fprintln(os.Stderr, "give --database URL or set DATABASE_URL")
		return 64, nil
	}
	// params is text holding JSON: build it with encoding/json, never by gluing strings.
	// Send display values as strings ("12.50", not 12.5) so they show as written.
	if *params == "" {
		b, err := json.Marshal([]string{"拿铁 Latte", "12.50", "已发货", "谢谢惠顾"})
		if err != nil {
			return 1, err
		}
		*params = string(b)
	}

	h, err := open(*database)
	if err != nil {
		return 1, err
	}
	defer h.db.Close()
	names := []string{"template", "openid", "params"}
	values := []any{*template, *openid, *params}
	if *dedupKey != "" {
		names, values = append(names, "dedup_key"), append(values, *dedupKey)
	}
	if *delay > 0 {
		// send_at is UTC: time.Now().UTC(). lib/pq sends a time.Time with its offset and
		// go-sql-driver/mysql converts it to cfg.Loc (UTC, as is the session); SQLite
		// gets text in the form it stores, 'YYYY-MM-DD HH:MM:SS'.
		due := time.Now().UTC().Add(time.Duration(*delay * float64(time.Second)))
		var sendAt any = due
		if h.engine == "sqlite" {
			sendAt = due.Format("2006-01-02 15:04:05")
		}
		names, values = append(names, "send_at"), append(values, sendAt)
	}

	id, inserted, err := h.queue(names, values, *dedupKey)
	if err != nil {
		return 1, err
	}
	if inserted {
		fmt.Printf("row: %d (inserted)\n", id)
	} else {
		fmt.Printf("row: %d (dedup_key %s was already queued)\n", id, *dedupKey)
	}

	deadline := time.Now().Add(time.Duration(*timeout * float64(time.Second)))
	var out map[string]sql.NullString
	for {
		if out, err = h.outcome(id); err != nil {
			return 1, err
		}
		if settled[out["status"].String] || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, f := range fields {
		value := "NULL"
		if out[f].Valid {
			value = out[f].String
		}
		fmt.Printf("%s: %s\n", f, value)
	}
	// receipt stays NULL until WeChat reports delivery (only with the push set up)
	status := out["status"].String
	switch {
	case status == "success":
		return 0, nil
	case settled[status]:
		return 3, nil
	}
	fmt.Fprintf(os.Stderr, "row %d still %s after %g s\n", id, status, *timeout)
	return 4, nil
}

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
