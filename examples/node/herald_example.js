#!/usr/bin/env node
// Queue one WeChat message with Herald and wait for its outcome (Node.js).
//
// Inserts a row into msg_list with plain SQL, then polls that row until Herald has sent
// it (or failed it) and prints what Herald wrote. Copy the parts you need:
//
//     DATABASE_URL=postgresql://app@127.0.0.1/herald node herald_example.js --openid oUser...
//
// The URL is the one in Herald's config.yaml: sqlite:///relative.db, sqlite:////abs.db,
// postgresql://user:password@host:5432/db or mysql://user:password@host:3306/db.
// Drivers (npm): pg, mysql2, better-sqlite3 (version 12 on Node.js 20).
'use strict';

const { parseArgs } = require('node:util');

const SETTLED = ['success', 'fail', 'cancelled']; // wait and sending are not final
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Each engine behind the same three calls: insert(row) -> id, one(sql, args) -> row, close().
async function connect(url) {
  if (url.startsWith('sqlite:///')) {
    const Database = require('better-sqlite3');
    // sqlite:///herald.db is relative, sqlite:////var/lib/herald/herald.db absolute.
    // timeout: Herald writes to the same file; wait for its lock instead of failing at
    // once with "database is locked".
    const db = new Database(url.slice('sqlite:///'.length), { timeout: 10000 });
    return {
      engine: 'sqlite',
      insert: async (sql, args) => db.prepare(sql).run(...args).lastInsertRowid,
      one: async (sql, args) => db.prepare(sql).get(...args),
      isUniqueViolation: (err) => err.code === 'SQLITE_CONSTRAINT_UNIQUE',
      close: async () => db.close(),
    };
  }
  if (url.startsWith('postgresql://') || url.startsWith('postgres://')) {
    const { Client } = require('pg');
    const client = new Client({ connectionString: url });
    await client.connect();
    return {
      engine: 'postgres',
      // node-postgres has no insertId: ask for the id. It is a BIGINT, so pg hands it
      // over as a string.
      insert: async (sql, args) => (await client.query(pgMarks(sql) + ' RETURNING id', args)).rows[0].id,
      one: async (sql, args) => (await client.query(pgMarks(sql), args)).rows[0],
      isUniqueViolation: (err) => err.code === '23505',
      close: () => client.end(),
    };
  }
  if (url.startsWith('mysql://')) {
    const mysql = require('mysql2/promise');
    // charset utf8mb4: Chinese text and emoji survive
    const conn = await mysql.createConnection({ uri: url, charset: 'utf8mb4' });
    // TIMESTAMP columns convert from the session's zone: make it UTC.
    await conn.query("SET time_zone = '+00:00'");
    return {
      engine: 'mysql',
      insert: async (sql, args) => (await conn.execute(sql, args))[0].insertId,
      one: async (sql, args) => (await conn.execute(sql, args))[0][0],
      isUniqueViolation: (err) => err.code === 'ER_DUP_ENTRY',
      close: () => conn.end(),
    };
  }
  throw new Error(`unsupported database URL: ${url.split(':')[0]}`);
}

// node-postgres numbers its placeholders: ?, ? -> $1, $2 (no ? appears inside our SQL)
function pgMarks(sql) {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

// [id, inserted]: a second insert with the same dedup_key is rejected by the database's
// UNIQUE constraint; that is the earlier row, so follow it instead.
async function queue(db, row) {
  const names = Object.keys(row);
  const sql = `INSERT INTO msg_list (${names.join(', ')}) VALUES (${names.map(() => '?').join(', ')})`;
  try {
    return [await db.insert(sql, Object.values(row)), true];
  } catch (err) {
    if (row.dedup_key === undefined || !db.isUniqueViolation(err)) throw err;
  }
  const found = await db.one('SELECT id FROM msg_list WHERE dedup_key = ?', [row.dedup_key]);
  if (!found) throw new Error(`dedup_key ${row.dedup_key} was taken, and its row is gone`);
  return [found.id, false];
}

async function outcome(db, id) {
  // msgid is text: WeChat's ids exceed 2^53 (Number.MAX_SAFE_INTEGER), and Number(msgid),
  // parseInt or JSON.parse of a bare number would change its last digits. Keep the string.
  const found = await db.one('SELECT status, errcode, error, msgid, receipt FROM msg_list WHERE id = ?', [id]);
  if (!found) throw new Error(`row ${id} is gone (purged?)`);
  return found;
}

async function main() {
  const { values: opt } = parseArgs({
    options: {
      database: { type: 'string', default: process.env.DATABASE_URL },
      template: { type: 'string', default: 'order_status' },
      openid: { type: 'string', default: 'oExampleOpenid0000000000000' },
      params: { type: 'string' },
      'dedup-key': { type: 'string' },
      delay: { type: 'string', default: '0' },
      timeout: { type: 'string', default: '120' },
    },
  });
  if (!opt.database) {
    console.error('give --database URL or set DATABASE_URL');
    return 64;
  }
  // params is text holding JSON: build it with JSON.stringify, never by gluing strings.
  // Send display values as strings ('12.50', not 12.5) so they show as written.
  const row = {
    template: opt.template,
    openid: opt.openid,
    params: opt.params ?? JSON.stringify(['拿铁 Latte', '12.50', '已发货', '谢谢惠顾']),
  };
  if (opt['dedup-key'] !== undefined) row.dedup_key = opt['dedup-key'];

  const db = await connect(opt.database);
  // close the connection on every path: an open socket keeps Node.js running
  let id, out;
  try {
    const delay = Number(opt.delay);
    if (delay > 0) {
      // send_at is UTC. toISOString() is UTC ('2026-12-01T10:30:00.000Z'): PostgreSQL and
      // SQLite read the Z; MySQL refuses it ("Incorrect datetime value") and takes
      // 'YYYY-MM-DD HH:MM:SS' in the UTC session above. Never a Date's toString(),
      // toLocaleString() or getHours(): those are this machine's zone.
      const iso = new Date(Date.now() + delay * 1000).toISOString();
      row.send_at = db.engine === 'mysql' ? iso.slice(0, 19).replace('T', ' ') : iso;
    }

    let inserted;
    [id, inserted] = await queue(db, row);
    console.log(inserted ? `row: ${id} (inserted)` : `row: ${id} (dedup_key ${row.dedup_key} was already queued)`);

    const deadline = Date.now() + Number(opt.timeout) * 1000;
    for (;;) {
      out = await outcome(db, id);
      if (SETTLED.includes(out.status) || Date.now() >= deadline) break;
      await sleep(500);
    }
  } finally {
    await db.close();
  }
  for (const key of ['status', 'errcode', 'error', 'msgid', 'receipt']) {
    console.log(`${key}: ${out[key] ?? 'NULL'}`);
  }
  // receipt stays NULL until WeChat reports delivery (only with the push set up)
  if (out.status === 'success') return 0;
  if (SETTLED.includes(out.status)) return 3;
  console.error(`row ${id} still ${out.status} after ${opt.timeout} s`);
  return 4;
}

main().then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err.message || err); process.exitCode = 1; },
);
