//go:build windows

package cli

import (
	"context"
	"time"
)

// watchResize polls the console size (Windows has no SIGWINCH); resized
// checks whether the size changed.
func watchResize(ctx context.Context, resized func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				resized()
			}
		}
	}()
	return cancel
}
