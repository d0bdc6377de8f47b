// Package flock is the test rack's one machine-wide lock: an exclusive
// flock(2) on a file, shared by the test hosts' registry, the test control
// planes, the blackhole routes and the init shim. It has no dependencies, so
// the small stand-in binaries can import it.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Lock is a held lock; Unlock (closing the file) releases it, and so does
// the holder's death, which is what makes a crashed run harmless.
type Lock struct{ f *os.File }

// Acquire takes the lock on path, creating the file (0600) when needed. It
// polls rather than blocks in flock(2), so ctx's deadline applies while
// another process holds the lock (a cold build holds one for minutes).
func Acquire(ctx context.Context, path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &Lock{f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() { l.f.Close() }
