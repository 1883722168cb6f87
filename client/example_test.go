package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/client"
)

// The examples talk to the server in LIMITD_URL (http://127.0.0.1:7070 when
// unset), as a program using limitd would; the tests start one there.

// Do is a semaphore across processes and machines: at most Capacity calls
// of fn run at once, each holding a slot that renews itself while fn runs
// and is released when fn returns.
func ExampleClient_Do() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("LIMITD_URL"))
	if err != nil {
		log.Fatal(err)
	}
	// Once, by an admin (or "limitd limits set payments-api --capacity 3").
	if _, err := c.PutLimit(ctx, "payments-api", client.LimitConfig{Capacity: 3}); err != nil {
		log.Fatal(err)
	}

	err = c.Do(ctx, "payments-api", func(ctx context.Context) error {
		// At most 3 of these run at once, wherever they run. ctx is
		// canceled if the slot is lost, so pass it on to the work.
		fmt.Println("calling the payments API")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: calling the payments API
}

// Acquire and Release hold a slot across code that does not fit in one
// function. The lease renews itself until it is released; Done says when
// it was lost, and Fence tells a protected resource which holder is newer.
func ExampleClient_Acquire() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("LIMITD_URL"), client.WithHolder("exporter-1"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.PutLimit(ctx, "nightly-export", client.LimitConfig{Capacity: 1}); err != nil {
		log.Fatal(err)
	}

	lease, err := c.Acquire(ctx, "nightly-export", client.Wait(time.Minute), client.TTL(30*time.Second))
	if errors.Is(err, client.ErrNoSlots) {
		fmt.Println("another export is running; try later")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(context.Background())

	done := make(chan error, 1)
	go func() { done <- export(lease.Fence()) }()
	select {
	case err := <-done:
		fmt.Println("export finished:", err)
	case <-lease.Done():
		// Someone else may hold the slot now: stop writing.
		fmt.Println("lost the slot:", lease.Err())
	}
	// Output: export finished: <nil>
}

// export stands for work that hands the fence to what it writes to, so
// that writes of a holder whose lease expired can be refused.
func export(fence uint64) error {
	if fence == 0 {
		return errors.New("no fence")
	}
	return nil
}

// The admin calls manage limits and show who holds and who waits.
func ExampleClient_PutLimit() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("LIMITD_URL"))
	if err != nil {
		log.Fatal(err)
	}
	l, err := c.PutLimit(ctx, "gpu-jobs", client.LimitConfig{
		Capacity:    2,
		DefaultTTL:  5 * time.Minute,
		Description: "the two GPUs of box-7",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: capacity %d, default TTL %v\n", l.Name, l.Capacity, time.Duration(l.DefaultTTLSeconds)*time.Second)

	lease, err := c.Acquire(ctx, "gpu-jobs", client.Holder("trainer-a"))
	if err != nil {
		log.Fatal(err)
	}
	leases, err := c.Leases(ctx, "gpu-jobs")
	if err != nil {
		log.Fatal(err)
	}
	for _, ls := range leases {
		fmt.Printf("held by %s: %d slot\n", ls.Holder, ls.Slots)
	}
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}

	if err := c.DeleteLimit(ctx, "gpu-jobs"); err != nil {
		log.Fatal(err)
	}
	_, err = c.GetLimit(ctx, "gpu-jobs")
	fmt.Println("after delete, not found:", errors.Is(err, client.ErrLimitNotFound))
	// Output:
	// gpu-jobs: capacity 2, default TTL 5m0s
	// held by trainer-a: 1 slot
	// after delete, not found: true
}

// Errors from the server carry the API's stable codes; compare them with
// errors.Is and the Err constants.
func ExampleSentinel() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("LIMITD_URL"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Acquire(ctx, "no-such-limit")
	switch {
	case errors.Is(err, client.ErrLimitNotFound):
		fmt.Println("create the limit first")
	case err != nil:
		log.Fatal(err)
	}
	// Output: create the limit first
}

// ListLimits shows every limit with its usage, as a dashboard or a
// capacity check would read it.
func ExampleClient_ListLimits() {
	ctx := context.Background()
	c, err := client.FromEnv() // LIMITD_URL and LIMITD_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"etl:load", "etl:extract"} {
		if _, err := c.PutLimit(ctx, name, client.LimitConfig{Capacity: 2}); err != nil {
			log.Fatal(err)
		}
		defer c.DeleteLimit(ctx, name)
	}
	lease, err := c.Acquire(ctx, "etl:extract")
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(ctx)

	limits, err := c.ListLimits(ctx) // sorted by name
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range limits {
		if strings.HasPrefix(l.Name, "etl:") {
			fmt.Printf("%-12s %d/%d in use, %d waiting\n", l.Name, l.InUse, l.Capacity, l.Waiting)
		}
	}
	// Output:
	// etl:extract  1/2 in use, 0 waiting
	// etl:load     0/2 in use, 0 waiting
}

// Waiters shows who waits for a limit, head of the queue first: what an
// admin looks at when work is stuck.
func ExampleClient_Waiters() {
	ctx := context.Background()
	c, err := client.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.PutLimit(ctx, "render-farm", client.LimitConfig{Capacity: 1}); err != nil {
		log.Fatal(err)
	}
	defer c.DeleteLimit(ctx, "render-farm")
	held, err := c.Acquire(ctx, "render-farm", client.Holder("render-1"))
	if err != nil {
		log.Fatal(err)
	}

	// Another worker queues behind the holder.
	got := make(chan *client.Lease)
	go func() {
		l, err := c.Acquire(ctx, "render-farm", client.Holder("render-2"))
		if err != nil {
			log.Fatal(err)
		}
		got <- l
	}()
	var waiters []limitd.Waiter
	for len(waiters) == 0 { // the server sends no event when a request queues
		time.Sleep(10 * time.Millisecond)
		if waiters, err = c.Waiters(ctx, "render-farm"); err != nil {
			log.Fatal(err)
		}
	}
	for _, w := range waiters {
		fmt.Printf("#%d %s waits for %d slot\n", w.Position, w.Holder, w.Slots)
	}

	// The release hands the slot to the head of the queue at once.
	if err := held.Release(ctx); err != nil {
		log.Fatal(err)
	}
	next := <-got
	fmt.Println("now held by", next.Lease().Holder)
	if err := next.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// #1 render-2 waits for 1 slot
	// now held by render-2
}
