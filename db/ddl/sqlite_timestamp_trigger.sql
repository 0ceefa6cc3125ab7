-- One timestamp trigger, written once: db/dialects.py (SQLite.ddl) expands it for each
-- column named by the `-- herald:timestamp-triggers` line of sqlite.sql, an AFTER INSERT
-- and an AFTER UPDATE OF <column> trigger each ({col}: the column; {kind}: insert or
-- update; {event}: INSERT or UPDATE OF <column>; {nullable}: "NEW.<column> IS NOT NULL
-- AND " for a column that may be NULL). `herald schema --dialect sqlite` prints them
-- expanded, as init-db runs them.
DROP TRIGGER IF EXISTS msg_list_{col}_{kind};
CREATE TRIGGER msg_list_{col}_{kind} AFTER {event} ON msg_list
WHEN {nullable}NOT (typeof(NEW.{col}) = 'text' AND substr(NEW.{col}, 1, 19) IS datetime(substr(NEW.{col}, 1, 19), '+0 seconds')
         AND (length(NEW.{col}) = 19 OR (substr(NEW.{col}, 20, 1) = '.' AND length(NEW.{col}) BETWEEN 21 AND 26
              AND substr(NEW.{col}, 21) NOT GLOB '*[^0-9]*')))
BEGIN
    SELECT RAISE(ABORT, 'msg_list.{col} is not a time: write UTC as YYYY-MM-DD HH:MM:SS, ISO 8601 with Z or an offset, or Unix epoch seconds')
        WHERE (CASE WHEN typeof(NEW.{col}) IN ('integer', 'real') THEN strftime('%Y-%m-%d %H:%M:%f', NEW.{col}, 'unixepoch')
           WHEN typeof(NEW.{col}) = 'text' AND NEW.{col} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'
                AND strftime('%Y-%m-%d %H:%M:%f', NEW.{col}) = strftime('%Y-%m-%d %H:%M:%f', NEW.{col}, '+0 seconds')
           THEN strftime('%Y-%m-%d %H:%M:%f', NEW.{col}, '+0 seconds') END) IS NULL;
    UPDATE msg_list SET {col} = CASE WHEN typeof(NEW.{col}) IN ('integer', 'real') THEN strftime('%Y-%m-%d %H:%M:%f', NEW.{col}, 'unixepoch')
           WHEN typeof(NEW.{col}) = 'text' AND NEW.{col} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'
                AND strftime('%Y-%m-%d %H:%M:%f', NEW.{col}) = strftime('%Y-%m-%d %H:%M:%f', NEW.{col}, '+0 seconds')
           THEN strftime('%Y-%m-%d %H:%M:%f', NEW.{col}, '+0 seconds') END
    WHERE id = NEW.id;
END;
