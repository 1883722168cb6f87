package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/limitd/limitd/internal/slots"
)

// statements are the writer's SQL, prepared once on the store's one
// connection: parsing SQL on every change was a third of the cost of a
// commit, and binding prepared statements to a new database/sql transaction
// for every batch cost another sixth. The transaction is begun and ended by
// statements of its own for the same reason.
type statements struct {
	begin, commit, rollback                     *sql.Stmt
	insertLease, renewLease, deleteLease        *sql.Stmt
	upsertLimit, deleteLimitLeases, deleteLimit *sql.Stmt
	saveFence                                   *sql.Stmt
}

func (s *statements) prepare(ctx context.Context, conn *sql.Conn) error {
	for _, p := range []struct {
		dst   **sql.Stmt
		query string
	}{
		// IMMEDIATE takes the write lock at BEGIN, so a batch never fails
		// half-way for want of it.
		{&s.begin, `BEGIN IMMEDIATE`},
		{&s.commit, `COMMIT`},
		{&s.rollback, `ROLLBACK`},
		{&s.insertLease, `INSERT INTO leases (id, limit_name, slots, holder, fence, acquired_at_ns, expires_at_ns, ttl_ns, idempotency_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&s.renewLease, `UPDATE leases SET expires_at_ns = ?, ttl_ns = ? WHERE id = ?`},
		{&s.deleteLease, `DELETE FROM leases WHERE id = ?`},
		{&s.upsertLimit, `INSERT INTO limits (name, capacity, default_ttl_ns, description, created_at_ns, updated_at_ns)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET capacity = excluded.capacity, default_ttl_ns = excluded.default_ttl_ns,
				description = excluded.description, updated_at_ns = excluded.updated_at_ns`},
		{&s.deleteLimitLeases, `DELETE FROM leases WHERE limit_name = ?`},
		{&s.deleteLimit, `DELETE FROM limits WHERE name = ?`},
		{&s.saveFence, `INSERT INTO meta (key, value) VALUES ('fence', ?)
			ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)`},
	} {
		stmt, err := conn.PrepareContext(ctx, p.query)
		if err != nil {
			s.close()
			return err
		}
		*p.dst = stmt
	}
	return nil
}

func (s *statements) close() {
	for _, st := range []*sql.Stmt{s.begin, s.commit, s.rollback, s.insertLease, s.renewLease, s.deleteLease,
		s.upsertLimit, s.deleteLimitLeases, s.deleteLimit, s.saveFence} {
		if st != nil {
			st.Close()
		}
	}
}

// apply writes one change, inside the transaction the caller began.
func (s *statements) apply(ctx context.Context, c slots.Change) error {
	var err error
	switch c.Kind {
	case slots.ChangeGrant:
		l := c.Lease
		_, err = s.insertLease.ExecContext(ctx, l.ID, l.Limit, l.Slots, l.Holder, int64(l.Fence),
			l.AcquiredAt.UnixNano(), l.ExpiresAt.UnixNano(), int64(l.TTL), l.IdempotencyKey)
	case slots.ChangeRenew:
		_, err = s.renewLease.ExecContext(ctx, c.Lease.ExpiresAt.UnixNano(), int64(c.Lease.TTL), c.Lease.ID)
	case slots.ChangeRelease:
		_, err = s.deleteLease.ExecContext(ctx, c.Lease.ID)
	case slots.ChangePutLimit:
		l := c.Limit
		_, err = s.upsertLimit.ExecContext(ctx, l.Name, l.Capacity, int64(l.DefaultTTL), l.Description,
			l.CreatedAt.UnixNano(), l.UpdatedAt.UnixNano())
	case slots.ChangeDeleteLimit:
		if _, err = s.deleteLimitLeases.ExecContext(ctx, c.Limit.Name); err == nil {
			_, err = s.deleteLimit.ExecContext(ctx, c.Limit.Name)
		}
	default:
		err = errors.New("unknown change kind")
	}
	if err != nil {
		return fmt.Errorf("applying change %d: %w", c.Kind, err)
	}
	return nil
}
