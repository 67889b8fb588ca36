//go:build !windows

package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// watchResize calls resized on every SIGWINCH until ctx ends or stop is
// called.
func watchResize(ctx context.Context, resized func()) (stop func()) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-winch:
				resized()
			}
		}
	}()
	return func() { signal.Stop(winch); cancel() }
}
