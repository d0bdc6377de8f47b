// Package sleep waits in a way that Ctrl-C (a cancelled context) cuts short:
// the one sleep every retry and poll loop in rack uses.
package sleep

import (
	"context"
	"time"
)

// For waits d, or until ctx is done, and then returns ctx's error.
func For(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
