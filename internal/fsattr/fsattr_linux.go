// Package fsattr sets Linux file attributes (chattr): tests use the
// immutable one to make a file that even root cannot write, the way a full
// or read-only disk refuses a store's writes.
package fsattr

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// immutableFL is FS_IMMUTABLE_FL of linux/fs.h (x/sys/unix does not name it).
const immutableFL = 0x10

// ErrUnsupported wraps the failures that mean this file system or these
// privileges do not allow it (tests skip on it).
var ErrUnsupported = fmt.Errorf("file attributes unsupported here")

// SetImmutable sets or clears the immutable attribute of path (chattr +i /
// -i). Setting it needs root (CAP_LINUX_IMMUTABLE) and a file system that
// keeps the attribute; otherwise the error wraps ErrUnsupported.
func SetImmutable(path string, on bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("%w: get attributes of %s: %w", ErrUnsupported, path, err)
	}
	if on {
		flags |= immutableFL
	} else {
		flags &^= immutableFL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		return fmt.Errorf("%w: set attributes of %s: %w", ErrUnsupported, path, err)
	}
	return nil
}
