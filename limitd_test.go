package limitd_test

import (
	"math"
	"testing"
	"time"

	"github.com/limitd/limitd"
)

func TestDurationRoundsAndSaturates(t *testing.T) {
	for _, c := range []struct {
		seconds float64
		want    time.Duration
	}{
		{0.1, 100 * time.Millisecond},
		{1.5, 1500 * time.Millisecond},
		{86400, 24 * time.Hour},
		{1e10, math.MaxInt64},
		{1e308, math.MaxInt64},
		{math.Inf(1), math.MaxInt64},
		{-1e308, math.MinInt64},
		{math.NaN(), 0},
	} {
		if got := limitd.Duration(c.seconds); got != c.want {
			t.Errorf("Duration(%v) = %v, want %v", c.seconds, got, c.want)
		}
	}
}
