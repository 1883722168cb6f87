// Package store keeps limitd's durable state in SQLite: limits, live leases
// and the fencing counter. It is the only package with SQL.
//
// Writes arrive through Append (the slots.Journal interface) and are
// committed in order, one transaction at a time, many changes to a
// transaction: while one transaction commits, the next batch gathers, so
// concurrent grants and releases share one commit (and one fsync) instead of
// paying one each. The committer is usually the request that waits for its
// change (slots.Commit.Wait helps), else a writer goroutine.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/limitd/limitd/internal/slots"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// fenceBlock is how far ahead of the fences handed out the store reserves
// the fence counter: the counter is written only when a fence passes the
// reservation, not in every batch, and after a restart the manager starts
// above the reservation, so fences still only grow (with a gap).
const fenceBlock = 1024

// maxBatch bounds one transaction, so one huge burst cannot delay the
// answers of its first requests for long.
const maxBatch = 4096

// Options tunes a Store.
type Options struct {
	// Synchronous is SQLite's synchronous mode: "normal" (the default)
	// survives a crash of the process; "full" also survives power loss.
	Synchronous string
	// OnCommit, when set, is called after every batch with its size, how
	// long the commit took, and its error.
	OnCommit func(changes int, took time.Duration, err error)
	// RetryDelay is how long the writer waits before retrying deletions
	// after a failed commit; 1s when zero.
	RetryDelay time.Duration
}

// Store is an open database plus its batching writer.
type Store struct {
	db *sql.DB
	// conn is the database's one connection, held for the store's life:
	// the exclusive lock belongs to it, and the statements are prepared on
	// it. Load and the committers use it; never two at once.
	conn  *sql.Conn
	opts  Options
	stmts statements

	mu      sync.Mutex
	pending []pendingChange
	// retry holds deletions whose commit failed; they are idempotent and
	// go first into the next batch, which keeps their order before any
	// later change.
	retry   []slots.Change
	closing bool

	// fenceReserved is the fence counter as stored: no fence above it
	// has been handed out.
	fenceReserved atomic.Uint64

	// commitMu is held by whoever commits: the writer goroutine, or a
	// caller waiting on its Commit (see Help). One committer at a time,
	// each taking the oldest queued changes, keeps commits in order.
	commitMu sync.Mutex
	batch    []pendingChange // the batch being committed; guarded by commitMu
	stopped  bool            // the writer has exited; guarded by mu

	wake chan struct{} // buffered 1: "there is work"
	done chan struct{} // closed when the writer has stopped
}

type pendingChange struct {
	change slots.Change
	commit *slots.Commit
}

// State is what Load returns: everything needed to rebuild the manager.
type State struct {
	Limits []slots.LimitRecord
	Leases []slots.LeaseRecord
	Fence  uint64
}

// Open opens (creating if needed) the database at path, takes an exclusive
// lock on it (two servers on one file would each hand out the full capacity),
// runs pending migrations and starts the writer.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	syncMode := strings.ToUpper(opts.Synchronous)
	if syncMode == "" {
		syncMode = "NORMAL"
	}
	if syncMode != "NORMAL" && syncMode != "FULL" {
		return nil, fmt.Errorf("store: synchronous mode %q: want normal or full", opts.Synchronous)
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	q := url.Values{}
	for _, p := range []string{
		"busy_timeout(2000)",
		"journal_mode(WAL)",
		"synchronous(" + syncMode + ")",
		// EXCLUSIVE keeps the lock from the first write until Close, so
		// a second limitd on the same file fails at start.
		"locking_mode(EXCLUSIVE)",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	// One connection (Store.conn): the exclusive lock belongs to a
	// connection.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &Store{db: db, opts: opts, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: opening %s: %w", path, describeOpenError(path, err))
	}
	if s.conn, err = db.Conn(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	if err := s.stmts.prepare(ctx, s.conn); err != nil {
		s.conn.Close()
		db.Close()
		return nil, fmt.Errorf("store: opening %s: preparing statements: %w", path, err)
	}
	go s.writeLoop()
	return s, nil
}

// describeOpenError says in words what SQLite's terse open errors mean,
// looking at the file system where SQLite does not say.
func describeOpenError(path string, err error) error {
	msg := err.Error()
	dir := filepath.Dir(path)
	if _, statErr := os.Stat(dir); errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Errorf("the directory %s does not exist: %w", dir, err)
	}
	for _, p := range []string{path, dir} {
		if accessErr := syscall.Access(p, 2 /* W_OK */); errors.Is(accessErr, syscall.EROFS) || errors.Is(accessErr, syscall.EACCES) {
			return fmt.Errorf("the database or its directory is read-only (%s: %v): %w", p, accessErr, err)
		}
	}
	switch {
	case strings.Contains(msg, "database is locked") || strings.Contains(msg, "SQLITE_BUSY"):
		return fmt.Errorf("the database is locked by another process (is another limitd running on this file?): %w", err)
	case strings.Contains(msg, "readonly") || strings.Contains(msg, "read-only"):
		return fmt.Errorf("the database or its directory is read-only: %w", err)
	case strings.Contains(msg, "not a database") || strings.Contains(msg, "malformed"):
		return fmt.Errorf("the file is not a limitd database or is corrupt: %w", err)
	}
	return err
}

// migrate runs every embedded migration newer than the database's version,
// each in its own transaction together with its version record.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at_ns INTEGER NOT NULL) STRICT`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	var current int
	if err := s.db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	latest := 0
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s has no numeric prefix", base)
		}
		latest = version
		if version <= current {
			continue
		}
		body, err := migrationFiles.ReadFile(name)
		if err != nil {
			return err
		}
		if err := s.applyMigration(ctx, version, base, string(body)); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	if current > latest {
		return fmt.Errorf("database schema version %d is newer than this limitd knows (%d): upgrade limitd", current, latest)
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, version int, name, body string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at_ns) VALUES (?, ?, ?)`,
		version, name, time.Now().UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}

// Load reads the whole state. It checks every row, so a corrupt or hostile
// database is refused with an error that names the row, rather than loaded
// into a silently wrong limit.
func (s *Store) Load(ctx context.Context) (State, error) {
	var st State
	rows, err := s.conn.QueryContext(ctx, `SELECT name, capacity, default_ttl_ns, description, created_at_ns, updated_at_ns FROM limits ORDER BY name`)
	if err != nil {
		return st, fmt.Errorf("store: loading limits: %w", err)
	}
	for rows.Next() {
		var r slots.LimitRecord
		var ttl, created, updated int64
		if err := rows.Scan(&r.Name, &r.Capacity, &ttl, &r.Description, &created, &updated); err != nil {
			rows.Close()
			return st, fmt.Errorf("store: loading limits: %w", err)
		}
		r.DefaultTTL, r.CreatedAt, r.UpdatedAt = time.Duration(ttl), fromNanos(created), fromNanos(updated)
		if err := checkLimit(r); err != nil {
			rows.Close()
			return st, fmt.Errorf("store: loading limits: limit %q: %w", r.Name, err)
		}
		st.Limits = append(st.Limits, r)
	}
	if err := closeRows(rows); err != nil {
		return st, fmt.Errorf("store: loading limits: %w", err)
	}

	rows, err = s.conn.QueryContext(ctx, `SELECT id, limit_name, slots, holder, fence, acquired_at_ns, expires_at_ns, ttl_ns, idempotency_key FROM leases ORDER BY fence`)
	if err != nil {
		return st, fmt.Errorf("store: loading leases: %w", err)
	}
	seenFence := make(map[uint64]string)
	now := time.Now()
	for rows.Next() {
		var r slots.LeaseRecord
		var fence, acquired, expires, ttl int64
		if err := rows.Scan(&r.ID, &r.Limit, &r.Slots, &r.Holder, &fence, &acquired, &expires, &ttl, &r.IdempotencyKey); err != nil {
			rows.Close()
			return st, fmt.Errorf("store: loading leases: %w", err)
		}
		r.Fence, r.AcquiredAt, r.ExpiresAt, r.TTL = uint64(fence), fromNanos(acquired), fromNanos(expires), time.Duration(ttl)
		if fence < 1 {
			r.Fence = 0
		}
		if err := checkLease(r, now); err != nil {
			rows.Close()
			return st, fmt.Errorf("store: loading leases: lease %q: %w", r.ID, err)
		}
		if other, dup := seenFence[r.Fence]; dup {
			rows.Close()
			return st, fmt.Errorf("store: loading leases: leases %q and %q share fence %d", other, r.ID, r.Fence)
		}
		seenFence[r.Fence] = r.ID
		st.Leases = append(st.Leases, r)
	}
	if err := closeRows(rows); err != nil {
		return st, fmt.Errorf("store: loading leases: %w", err)
	}

	var fence sql.NullInt64
	err = s.conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'fence'`).Scan(&fence)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("store: loading the fence counter: %w", err)
	}
	if fence.Int64 < 0 {
		return st, fmt.Errorf("store: loading the fence counter: %d is negative", fence.Int64)
	}
	st.Fence = uint64(fence.Int64)
	s.fenceReserved.Store(st.Fence)
	return st, nil
}

func closeRows(rows *sql.Rows) error {
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}

// Append queues changes for the next group commit; it never blocks on I/O.
// It is the slots.Journal the manager writes to.
func (s *Store) Append(entries []slots.Entry) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		for _, e := range entries {
			e.Commit.Resolve(errors.New("store: closed"))
		}
		return
	}
	unattended := false
	for _, e := range entries {
		s.pending = append(s.pending, pendingChange{change: e.Change, commit: e.Commit})
		unattended = unattended || !e.Commit.Awaited()
	}
	s.mu.Unlock()
	// Changes that a goroutine waits for are committed by it (Help), so the
	// writer is woken only for the others: waking it for every change put
	// it in a race with the waiter, and when it won, the grant paid the two
	// hand-offs that Help exists to save.
	if unattended {
		s.signal()
	}
}

// Help commits the queued changes on the calling goroutine when no commit
// is running; otherwise it returns at once and the running committer, or
// the writer after it, takes them. It makes the Store a slots.Helper.
func (s *Store) Help() {
	// Yield once first: when other requests are runnable they append
	// their changes meanwhile and share this commit (a busy server keeps
	// its large batches); when none are, this returns at once.
	runtime.Gosched()
	if !s.commitMu.TryLock() {
		return
	}
	s.commitNextLocked()
	s.commitMu.Unlock()
	// A change appended while this commit ran was not woken for: its
	// waiter's Help found commitMu held. Checking after the unlock leaves no
	// gap: a change appended later finds commitMu free in its own Help.
	s.mu.Lock()
	more := len(s.pending) > 0
	s.mu.Unlock()
	if more {
		s.signal()
	}
}

// Write queues one change and returns its Commit: Append for callers that
// are not the manager (tools that build a database, tests).
func (s *Store) Write(c slots.Change) *slots.Commit {
	commit := slots.NewCommit()
	commit.OnWait(s.Help)
	s.Append([]slots.Entry{{Change: c, Commit: commit}})
	return commit
}

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close commits what is queued, stops the writer and closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closing
	s.closing = true
	s.mu.Unlock()
	if !already {
		s.signal()
	}
	<-s.done
	if already {
		return nil
	}
	// A waiter's commit that began before the writer stopped ends first;
	// none begins after (they find stopped set, or commitMu held for good).
	s.commitMu.Lock()
	s.stmts.close()
	s.conn.Close()
	return s.db.Close()
}

// writeLoop is the writer of last resort: it commits whatever is queued and
// no waiting caller committed, many changes to a transaction, and repeats.
// Changes queued while a commit runs form the next batch.
func (s *Store) writeLoop() {
	defer close(s.done)
	for range s.wake {
		for {
			s.commitMu.Lock()
			s.commitNextLocked()
			s.commitMu.Unlock()
			s.mu.Lock()
			more := len(s.pending) > 0
			closing := s.closing
			if closing && !more {
				s.stopped = true
			}
			s.mu.Unlock()
			if more {
				continue
			}
			if closing {
				return
			}
			break
		}
	}
}

// commitNextLocked commits the oldest queued changes (and the deletions to
// retry) in one transaction, with commitMu held.
func (s *Store) commitNextLocked() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	retry := s.retry
	s.retry = nil
	n := min(len(s.pending), maxBatch)
	s.batch = append(s.batch[:0], s.pending[:n]...)
	s.pending = append(s.pending[:0], s.pending[n:]...)
	s.mu.Unlock()

	if len(s.batch) > 0 || len(retry) > 0 {
		s.commitBatch(retry, s.batch)
	}
	clear(s.batch)
}

func (s *Store) commitBatch(retry []slots.Change, batch []pendingChange) {
	start := time.Now()
	err := s.apply(retry, batch)
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(len(retry)+len(batch), time.Since(start), err)
	}
	if err != nil {
		err = fmt.Errorf("store: committing %d changes: %w", len(retry)+len(batch), err)
		var keep []slots.Change
		keep = append(keep, retry...)
		for _, p := range batch {
			if p.change.Kind.Retryable() {
				keep = append(keep, p.change)
			}
		}
		if len(keep) > 0 {
			s.mu.Lock()
			s.retry = append(keep, s.retry...)
			s.mu.Unlock()
			time.AfterFunc(s.opts.RetryDelay, s.signal)
		}
	}
	for _, p := range batch {
		p.commit.Resolve(err)
	}
}

// apply writes one batch in one transaction.
func (s *Store) apply(retry []slots.Change, batch []pendingChange) error {
	ctx := context.Background()
	if _, err := s.stmts.begin.ExecContext(ctx); err != nil {
		return fmt.Errorf("beginning a transaction: %w", err)
	}
	if err := s.applyInTx(ctx, retry, batch); err != nil {
		// A failed statement or COMMIT may leave the transaction open;
		// when SQLite already rolled it back this fails, harmlessly.
		_, _ = s.stmts.rollback.ExecContext(ctx)
		return err
	}
	return nil
}

func (s *Store) applyInTx(ctx context.Context, retry []slots.Change, batch []pendingChange) error {
	var fence uint64
	for _, c := range retry {
		if err := s.stmts.apply(ctx, c); err != nil {
			return err
		}
	}
	for _, p := range batch {
		if err := s.stmts.apply(ctx, p.change); err != nil {
			return err
		}
		fence = max(fence, p.change.Fence)
	}
	reserve := s.fenceReserved.Load()
	if fence > reserve {
		reserve = fence + fenceBlock
		if _, err := s.stmts.saveFence.ExecContext(ctx, int64(reserve)); err != nil {
			return fmt.Errorf("saving the fence counter: %w", err)
		}
	}
	if _, err := s.stmts.commit.ExecContext(ctx); err != nil {
		return err
	}
	s.fenceReserved.Store(reserve)
	return nil
}

func fromNanos(ns int64) time.Time { return time.Unix(0, ns).UTC() }
