<?php
// Queue one WeChat message with Herald and wait for its outcome (PHP, PDO).
//
// Inserts a row into msg_list with plain SQL, then polls that row until Herald has sent
// it (or failed it) and prints what Herald wrote. Copy the parts you need:
//
//     DATABASE_URL=postgresql://app@127.0.0.1/herald php herald_example.php --openid=oUser...
//
// The URL is the one in Herald's config.yaml: sqlite:///relative.db, sqlite:////abs.db,
// postgresql://user:password@host:5432/db or mysql://user:password@host:3306/db.
// Drivers: pdo_sqlite, pdo_pgsql, pdo_mysql (Debian: php-sqlite3, php-pgsql, php-mysql).

declare(strict_types=1);

const SETTLED = ['success', 'fail', 'cancelled'];  // wait and sending are not final

/** [engine, PDO] for a Herald database URL. */
function connect(string $url): array
{
    $options = [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,      // errors throw, never pass silently
        PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
    ];
    if (str_starts_with($url, 'sqlite:///')) {
        // sqlite:///herald.db is relative, sqlite:////var/lib/herald/herald.db absolute.
        $pdo = new PDO('sqlite:' . substr($url, strlen('sqlite:///')), null, null, $options);
        // Herald writes to the same file: wait for its lock instead of failing at once
        // with "database is locked".
        $pdo->setAttribute(PDO::ATTR_TIMEOUT, 10);
        return ['sqlite', $pdo];
    }
    $u = parse_url($url);
    if ($u === false || !isset($u['scheme'])) {
        throw new InvalidArgumentException('not a database URL');
    }
    $user = isset($u['user']) ? rawurldecode($u['user']) : null;
    $password = isset($u['pass']) ? rawurldecode($u['pass']) : null;
    $host = $u['host'] ?? '127.0.0.1';
    $db = ltrim($u['path'] ?? '', '/');
    switch ($u['scheme']) {
        case 'postgresql':
        case 'postgres':
            $pdo = new PDO("pgsql:host=$host;port=" . ($u['port'] ?? 5432) . ";dbname=$db",
                $user, $password, $options);
            // send_at below is UTC written as text: the session must read it as UTC
            // (its zone otherwise comes from the server, or from PGTZ).
            $pdo->exec("SET TIME ZONE 'UTC'");
            return ['postgres', $pdo];
        case 'mysql':
            // charset=utf8mb4: Chinese text and emoji survive
            $pdo = new PDO("mysql:host=$host;port=" . ($u['port'] ?? 3306) . ";dbname=$db;charset=utf8mb4",
                $user, $password, $options);
            // TIMESTAMP columns convert from the session's zone: make it UTC.
            $pdo->exec("SET time_zone = '+00:00'");
            return ['mysql', $pdo];
    }
    throw new InvalidArgumentException("unsupported database URL scheme {$u['scheme']}");
}

/** The INSERT's id. */
function insert(string $engine, PDO $pdo, array $row): int
{
    $names = implode(', ', array_keys($row));
    $marks = implode(', ', array_fill(0, count($row), '?'));
    $sql = "INSERT INTO msg_list ($names) VALUES ($marks)";
    if ($engine === 'postgres') {
        // lastInsertId() on PostgreSQL needs the sequence's name: ask for the id instead
        $stmt = $pdo->prepare("$sql RETURNING id");
        $stmt->execute(array_values($row));
        return (int) $stmt->fetchColumn();
    }
    $pdo->prepare($sql)->execute(array_values($row));
    return (int) $pdo->lastInsertId();
}

function isUniqueViolation(PDOException $e): bool
{
    $info = $e->errorInfo ?? [];
    return ($info[0] ?? '') === '23505'                               // PostgreSQL
        || (($info[0] ?? '') === '23000' && ($info[1] ?? 0) === 1062)  // MySQL ER_DUP_ENTRY
        || str_contains($e->getMessage(), 'UNIQUE constraint failed'); // SQLite
}

/**
 * [id, inserted]: a second insert with the same dedup_key is rejected by the database's
 * UNIQUE constraint; that is the earlier row, so follow it instead.
 */
function queue(string $engine, PDO $pdo, array $row): array
{
    try {
        return [insert($engine, $pdo, $row), true];
    } catch (PDOException $e) {
        if (!isset($row['dedup_key']) || !isUniqueViolation($e)) {
            throw $e;
        }
    }
    $stmt = $pdo->prepare('SELECT id FROM msg_list WHERE dedup_key = ?');
    $stmt->execute([$row['dedup_key']]);
    $id = $stmt->fetchColumn();
    if ($id === false) {  // purged meanwhile: nothing to follow
        throw new RuntimeException("dedup_key {$row['dedup_key']} was taken, and its row is gone");
    }
    return [(int) $id, false];
}

function outcome(PDO $pdo, int $id): array
{
    // msgid is text: WeChat's ids exceed 2^53, which a float (or a JavaScript number in
    // the browser you json_encode it for) cannot hold exactly. Keep it a string.
    $stmt = $pdo->prepare('SELECT status, errcode, error, msgid, receipt FROM msg_list WHERE id = ?');
    $stmt->execute([$id]);
    $found = $stmt->fetch();
    if ($found === false) {
        throw new RuntimeException("row $id is gone (purged?)");
    }
    return $found;
}

function main(): int
{
    $opt = getopt('', ['database:', 'template:', 'openid:', 'params:', 'dedup-key:', 'delay:', 'timeout:']);
    $url = $opt['database'] ?? getenv('DATABASE_URL');
    if (!$url) {
        fwrite(STDERR, "give --database=URL or set DATABASE_URL\n");
        return 64;
    }
    // params is text holding JSON: build it with json_encode, never by gluing strings.
    // Send display values as strings ("12.50", not 12.5) so they show as written.
    $params = $opt['params'] ?? json_encode(['拿铁 Latte', '12.50', '已发货', '谢谢惠顾'],
        JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
    $row = [
        'template' => $opt['template'] ?? 'order_status',
        'openid' => $opt['openid'] ?? 'oExampleOpenid0000000000000',
        'params' => $params,
    ];
    if (isset($opt['dedup-key'])) {
        $row['dedup_key'] = $opt['dedup-key'];
    }
    $delay = (float) ($opt['delay'] ?? 0);
    if ($delay > 0) {
        // send_at is UTC: gmdate, never date() (that is this machine's zone)
        $row['send_at'] = gmdate('Y-m-d H:i:s', time() + (int) round($delay));
    }
    $timeout = (float) ($opt['timeout'] ?? 120);

    [$engine, $pdo] = connect($url);
    [$id, $inserted] = queue($engine, $pdo, $row);
    echo $inserted ? "row: $id (inserted)\n" : "row: $id (dedup_key {$row['dedup_key']} was already queued)\n";

    $deadline = microtime(true) + $timeout;
    while (true) {
        $out = outcome($pdo, $id);
        if (in_array($out['status'], SETTLED, true) || microtime(true) >= $deadline) {
            break;
        }
        usleep(500000);
    }
    foreach (['status', 'errcode', 'error', 'msgid', 'receipt'] as $key) {
        echo "$key: " . ($out[$key] ?? 'NULL') . "\n";
    }
    // receipt stays NULL until WeChat reports delivery (only with the push set up)
    if ($out['status'] === 'success') {
        return 0;
    }
    if (in_array($out['status'], SETTLED, true)) {
        return 3;
    }
    fwrite(STDERR, "row $id still {$out['status']} after {$timeout} s\n");
    return 4;
}

try {
    exit(main());
} catch (Throwable $e) {
    fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . "\n");
    exit(1);
}
