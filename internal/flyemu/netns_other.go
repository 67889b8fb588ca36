//go:build !linux

package flyemu

import (
	"context"
	"errors"

	"github.com/hashicorp/go-hclog"
)

// Network namespaces are Linux's: elsewhere machines share the host's network.
const namespacesSupported = false

func newNamespaceNet(context.Context, hclog.Logger) (netBackend, error) {
	return nil, errors.New("network namespaces need Linux")
}
