//go:build !linux

package flyemu

import (
	"errors"
	"syscall"
)

// Image mode needs runc, cgroups and overlayfs: Linux only. Elsewhere a
// machine whose image is in the store fails to launch.

const flyAPIPath = "/.fly/api"

type ociContainer struct{}

func (e *Emulator) ociSpecLocked(m *machine, img *StoredImage, argv, env []string, memMB int, dir string) (processSpec, *ociContainer, error) {
	return processSpec{}, nil, errors.New("image mode (containers) needs Linux")
}

func (c *ociContainer) signal(int, syscall.Signal) bool { return false }
func (c *ociContainer) finish(*exitInfo)                {}
func (c *ociContainer) cleanup()                        {}

func (c *ociContainer) execSpec(argv []string) processSpec { return processSpec{argv: argv} }
