"""The journal's schema: one tuple of statements per version, applied in order, never edited."""

from __future__ import annotations

# Append a tuple of statements to add a schema version; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE payments (
            out_trade_no   TEXT PRIMARY KEY,
            params         TEXT NOT NULL,
            params_hash    TEXT NOT NULL,
            state          TEXT NOT NULL,
            total_fee      INTEGER NOT NULL,
            body           TEXT NOT NULL,
            attach         TEXT NOT NULL DEFAULT '',
            transaction_id TEXT NOT NULL DEFAULT '',
            openid         TEXT NOT NULL DEFAULT '',
            bank_type      TEXT NOT NULL DEFAULT '',
            cash_fee       INTEGER NOT NULL DEFAULT 0,
            fee_type       TEXT NOT NULL DEFAULT '',
            time_end       TEXT NOT NULL DEFAULT '',
            err_code       TEXT NOT NULL DEFAULT '',
            err_code_des   TEXT NOT NULL DEFAULT '',
            created_at     REAL NOT NULL,
            updated_at     REAL NOT NULL,
            pay_sent_at    REAL,
            final          INTEGER NOT NULL DEFAULT 0,
            last_seq       INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX payments_by_created ON payments (created_at, out_trade_no)",
        "CREATE INDEX payments_unfinished ON payments (created_at) WHERE final = 0",
        """
        CREATE TABLE payment_events (
            out_trade_no TEXT NOT NULL REFERENCES payments (out_trade_no),
            seq          INTEGER NOT NULL,
            time         REAL NOT NULL,
            state        TEXT NOT NULL,
            kind         TEXT NOT NULL,
            data         TEXT NOT NULL,
            PRIMARY KEY (out_trade_no, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER payment_events_no_update BEFORE UPDATE ON payment_events
        BEGIN SELECT RAISE(ABORT, 'payment_events is append-only'); END
        """,
        """
        CREATE TRIGGER payment_events_no_delete BEFORE DELETE ON payment_events
        BEGIN SELECT RAISE(ABORT, 'payment_events is append-only'); END
        """,
    ),
    # 2: PayScore service orders. `pending` names the call whose answer is not recorded yet
    # ('' when none): such an order is resolved by a query after a restart.
    (
        """
        CREATE TABLE service_orders (
            out_order_no     TEXT PRIMARY KEY,
            params           TEXT NOT NULL,
            params_hash      TEXT NOT NULL,
            journal_state    TEXT NOT NULL,
            pending          TEXT NOT NULL DEFAULT '',
            risk_fund_amount INTEGER,
            answer           TEXT,
            created_at       REAL NOT NULL,
            updated_at       REAL NOT NULL,
            last_seq         INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX service_orders_pending ON service_orders (created_at) WHERE pending != ''",
        """
        CREATE TABLE service_order_events (
            out_order_no  TEXT NOT NULL REFERENCES service_orders (out_order_no),
            seq           INTEGER NOT NULL,
            time          REAL NOT NULL,
            journal_state TEXT NOT NULL,
            kind          TEXT NOT NULL,
            data          TEXT NOT NULL,
            PRIMARY KEY (out_order_no, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER service_order_events_no_update BEFORE UPDATE ON service_order_events
        BEGIN SELECT RAISE(ABORT, 'service_order_events is append-only'); END
        """,
        """
        CREATE TRIGGER service_order_events_no_delete BEFORE DELETE ON service_order_events
        BEGIN SELECT RAISE(ABORT, 'service_order_events is append-only'); END
        """,
    ),
    # 3: NEEDS_ATTENTION: why a payment waits for an operator, and what the operator should do
    # ('' in every other state).
    (
        "ALTER TABLE payments ADD COLUMN attention_reason TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE payments ADD COLUMN attention_action TEXT NOT NULL DEFAULT ''",
    ),
    # 4: retention and the write probe. A finished order is deleted with its events in one
    # transaction that first marks its row `pruning`; events stay append-only otherwise, and
    # an unfinished (or NEEDS_ATTENTION, final = 0) order can be neither marked nor deleted.
    # journal_probe holds one row that JournalHealth rewrites to learn the disk takes writes.
    (
        "ALTER TABLE payments ADD COLUMN pruning INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX payments_final_by_updated ON payments (updated_at) WHERE final = 1",
        """
        CREATE TRIGGER payments_prune_only_final BEFORE UPDATE OF pruning ON payments
        WHEN NEW.pruning != 0 AND NEW.final = 0
        BEGIN SELECT RAISE(ABORT, 'only a finished payment can be pruned'); END
        """,
        """
        CREATE TRIGGER payments_no_delete BEFORE DELETE ON payments
        WHEN OLD.final = 0 OR OLD.pruning = 0
        BEGIN SELECT RAISE(ABORT, 'only a finished payment marked pruning can be deleted'); END
        """,
        "DROP TRIGGER payment_events_no_delete",
        """
        CREATE TRIGGER payment_events_no_delete BEFORE DELETE ON payment_events
        WHEN NOT EXISTS (
            SELECT 1 FROM payments
            WHERE out_trade_no = OLD.out_trade_no AND final = 1 AND pruning = 1
        )
        BEGIN SELECT RAISE(ABORT, 'payment_events is append-only'); END
        """,
        """
        CREATE TABLE journal_probe (
            id     INTEGER PRIMARY KEY CHECK (id = 1),
            writes INTEGER NOT NULL
        )
        """,
        "INSERT INTO journal_probe (id, writes) VALUES (1, 0)",
    ),
    # 5: refunds, one row per out_refund_no (the idempotency key) and append-only events. A
    # refund's sum against its payment is checked in the transaction that inserts it; a refund
    # is deleted (with its events, marked `pruning` first) only once final, like payments.
    (
        """
        CREATE TABLE refunds (
            out_refund_no         TEXT PRIMARY KEY,
            out_trade_no          TEXT NOT NULL REFERENCES payments (out_trade_no),
            params                TEXT NOT NULL,
            params_hash           TEXT NOT NULL,
            state                 TEXT NOT NULL,
            refund_fee            INTEGER NOT NULL,
            total_fee             INTEGER NOT NULL,
            transaction_id        TEXT NOT NULL DEFAULT '',
            refund_id             TEXT NOT NULL DEFAULT '',
            settlement_refund_fee INTEGER NOT NULL DEFAULT 0,
            cash_refund_fee       INTEGER NOT NULL DEFAULT 0,
            coupon_refund_fee     INTEGER NOT NULL DEFAULT 0,
            refund_channel        TEXT NOT NULL DEFAULT '',
            success_time          TEXT NOT NULL DEFAULT '',
            recv_account          TEXT NOT NULL DEFAULT '',
            err_code              TEXT NOT NULL DEFAULT '',
            err_code_des          TEXT NOT NULL DEFAULT '',
            attention_reason      TEXT NOT NULL DEFAULT '',
            attention_action      TEXT NOT NULL DEFAULT '',
            first_sent_at         REAL,
            sent_at               REAL,
            attempts              INTEGER NOT NULL DEFAULT 0,
            created_at            REAL NOT NULL,
            updated_at            REAL NOT NULL,
            final                 INTEGER NOT NULL DEFAULT 0,
            pruning               INTEGER NOT NULL DEFAULT 0,
            last_seq              INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX refunds_by_payment ON refunds (out_trade_no, created_at, out_refund_no)",
        "CREATE INDEX refunds_unfinished ON refunds (created_at) WHERE final = 0",
        """
        CREATE TABLE refund_events (
            out_refund_no TEXT NOT NULL REFERENCES refunds (out_refund_no),
            seq           INTEGER NOT NULL,
            time          REAL NOT NULL,
            state         TEXT NOT NULL,
            kind          TEXT NOT NULL,
            data          TEXT NOT NULL,
            PRIMARY KEY (out_refund_no, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER refund_events_no_update BEFORE UPDATE ON refund_events
        BEGIN SELECT RAISE(ABORT, 'refund_events is append-only'); END
        """,
        """
        CREATE TRIGGER refund_events_no_delete BEFORE DELETE ON refund_events
        WHEN NOT EXISTS (
            SELECT 1 FROM refunds
            WHERE out_refund_no = OLD.out_refund_no AND final = 1 AND pruning = 1
        )
        BEGIN SELECT RAISE(ABORT, 'refund_events is append-only'); END
        """,
        """
        CREATE TRIGGER refunds_prune_only_final BEFORE UPDATE OF pruning ON refunds
        WHEN NEW.pruning != 0 AND NEW.final = 0
        BEGIN SELECT RAISE(ABORT, 'only a finished refund can be pruned'); END
        """,
        """
        CREATE TRIGGER refunds_no_delete BEFORE DELETE ON refunds
        WHEN OLD.final = 0 OR OLD.pruning = 0
        BEGIN SELECT RAISE(ABORT, 'only a finished refund marked pruning can be deleted'); END
        """,
    ),
    # 6: barcode payments and the full paid answer. `source` is FACE or CODE (the code itself is
    # never stored); `paid_details` is the paid answer's further fields as canonical JSON
    # (settlement_total_fee, coupon_fee, coupon_count, coupons [{coupon_id, coupon_type,
    # coupon_fee}], cash_fee_type, promotion_detail, is_subscribe, trade_type, sub_openid,
    # attach as echoed, trade_state_desc, device_info, trade_state), '{}' until paid.
    (
        "ALTER TABLE payments ADD COLUMN source TEXT NOT NULL DEFAULT 'FACE'",
        "ALTER TABLE payments ADD COLUMN paid_details TEXT NOT NULL DEFAULT '{}'",
    ),
    # 7: PayScore's in-flight bound. `sent_at` is the latest wall time a request of the pending
    # call may have left (its journaling, or the end of the attempt that left it unknown); NULL
    # for orders pending from before this version (the resolver then counts from its own start).
    ("ALTER TABLE service_orders ADD COLUMN sent_at REAL",),
)
SCHEMA_VERSION = len(MIGRATIONS)
