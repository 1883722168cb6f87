package main_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if goroutines are left running once
// they are done: the in-process servers, CLI runs and serve runs of these
// tests must all stop what they start (goroutines of a t.Parallel test
// that outlive it would otherwise go unnoticed).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
