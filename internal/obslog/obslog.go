// Package obslog logs the slot manager's events with log/slog: each lease's
// grant, renewal, release or expiry, acquires that were not granted, and
// limit changes, all at debug level (the API already logs every request, and
// every limit change with its before and after, at info).
//
// The manager reports events under its lock, where a write to a slow log
// output (a full pipe, a stalled journald) would stall every acquire. So a
// Logger only builds the record there and hands it to a goroutine of its own
// that writes it; when that goroutine falls behind by more than a buffer's
// worth, records are dropped and the drop is logged.
package obslog

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limitd/limitd/internal/slots"
)

// buffer is how many records may wait for the writer: enough for a burst of
// thousands of grants at once.
const buffer = 4096

// Logger is a slots.Observer that logs events. Close it to stop its writer.
type Logger struct {
	log     *slog.Logger
	records chan slog.Record
	dropped atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

var _ slots.Observer = (*Logger)(nil)

// New starts a Logger writing to log.
func New(log *slog.Logger) *Logger {
	l := &Logger{
		log:     log,
		records: make(chan slog.Record, buffer),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.run()
	return l
}

// Close writes the records still queued and stops the writer. Events
// reported after it are dropped silently. It may be called more than once.
func (l *Logger) Close() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

func (l *Logger) run() {
	defer close(l.done)
	for {
		select {
		case r := <-l.records:
			l.write(r)
		case <-l.stop:
			for {
				select {
				case r := <-l.records:
					l.write(r)
				default:
					l.reportDrops()
					return
				}
			}
		}
	}
}

func (l *Logger) write(r slog.Record) {
	_ = l.log.Handler().Handle(context.Background(), r)
	if len(l.records) == 0 {
		// Caught up: say what was lost, so a reader of the log knows it
		// has gaps.
		l.reportDrops()
	}
}

func (l *Logger) reportDrops() {
	if n := l.dropped.Swap(0); n > 0 {
		l.log.Warn("slot events were not logged: the log output was too slow", "dropped", n)
	}
}

func (l *Logger) enabled(level slog.Level) bool {
	return l.log.Enabled(context.Background(), level)
}

// emit queues a record without ever blocking the caller (the manager, under
// its lock).
func (l *Logger) emit(level slog.Level, msg string, attrs ...slog.Attr) {
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	select {
	case l.records <- r:
	default:
		l.dropped.Add(1)
	}
}

// Granted logs a new lease.
func (l *Logger) Granted(ls slots.LeaseRecord, waited time.Duration) {
	if !l.enabled(slog.LevelDebug) {
		return
	}
	l.emit(slog.LevelDebug, "lease granted",
		slog.String("limit", ls.Limit), slog.String("lease", ls.ID), slog.Int("slots", ls.Slots),
		slog.String("holder", ls.Holder), slog.Uint64("fence", ls.Fence),
		slog.Duration("ttl", ls.TTL), slog.Duration("waited", waited))
}

// NotGranted logs an acquire that ended without a lease.
func (l *Logger) NotGranted(limit string, result slots.AcquireResult) {
	if !l.enabled(slog.LevelDebug) {
		return
	}
	l.emit(slog.LevelDebug, "acquire not granted", slog.String("limit", limit), slog.String("result", string(result)))
}

// Renewed logs a lease's new expiry.
func (l *Logger) Renewed(ls slots.LeaseRecord) {
	if !l.enabled(slog.LevelDebug) {
		return
	}
	l.emit(slog.LevelDebug, "lease renewed",
		slog.String("limit", ls.Limit), slog.String("lease", ls.ID), slog.String("holder", ls.Holder),
		slog.Duration("ttl", ls.TTL), slog.Time("expires_at", ls.ExpiresAt))
}

// Ended logs a release or an expiry.
func (l *Logger) Ended(ls slots.LeaseRecord, held time.Duration, expired bool) {
	if !l.enabled(slog.LevelDebug) {
		return
	}
	msg := "lease released"
	if expired {
		msg = "lease expired"
	}
	l.emit(slog.LevelDebug, msg,
		slog.String("limit", ls.Limit), slog.String("lease", ls.ID), slog.Int("slots", ls.Slots),
		slog.String("holder", ls.Holder), slog.Duration("held", held))
}

// LimitChanged logs a limit's definition before and after a change.
func (l *Logger) LimitChanged(before *slots.LimitRecord, after slots.LimitRecord) {
	if !l.enabled(slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{slog.String("limit", after.Name), slog.Int("capacity", after.Capacity),
		slog.Duration("default_ttl", after.DefaultTTL)}
	if before == nil {
		l.emit(slog.LevelDebug, "limit created", attrs...)
		return
	}
	attrs = append(attrs, slog.Int("capacity_before", before.Capacity), slog.Duration("default_ttl_before", before.DefaultTTL))
	l.emit(slog.LevelDebug, "limit changed", attrs...)
}

// LimitDeleted logs a limit's deletion; its leases end with it, without an
// event of their own.
func (l *Logger) LimitDeleted(rec slots.LimitRecord) {
	if !l.enabled(slog.LevelDebug) {
		return
	}
	l.emit(slog.LevelDebug, "limit deleted", slog.String("limit", rec.Name), slog.Int("capacity", rec.Capacity))
}

// Multi returns an Observer that reports each event to every one of obs, in
// order.
func Multi(obs ...slots.Observer) slots.Observer { return multi(obs) }

type multi []slots.Observer

func (m multi) Granted(l slots.LeaseRecord, waited time.Duration) {
	for _, o := range m {
		o.Granted(l, waited)
	}
}

func (m multi) NotGranted(limit string, result slots.AcquireResult) {
	for _, o := range m {
		o.NotGranted(limit, result)
	}
}

func (m multi) Renewed(l slots.LeaseRecord) {
	for _, o := range m {
		o.Renewed(l)
	}
}

func (m multi) Ended(l slots.LeaseRecord, held time.Duration, expired bool) {
	for _, o := range m {
		o.Ended(l, held, expired)
	}
}

func (m multi) LimitChanged(before *slots.LimitRecord, after slots.LimitRecord) {
	for _, o := range m {
		o.LimitChanged(before, after)
	}
}

func (m multi) LimitDeleted(l slots.LimitRecord) {
	for _, o := range m {
		o.LimitDeleted(l)
	}
}
