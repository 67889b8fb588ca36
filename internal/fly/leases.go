package fly

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"time"
)

func ttlSeconds(ttl time.Duration) int {
	if ttl <= 0 {
		return 0
	}
	return max(1, int(math.Ceil(ttl.Seconds())))
}

func checkLease(op string, l *Lease) (*Lease, error) {
	if l.Nonce() == "" {
		msg := l.Message
		if msg == "" {
			msg = "response carries no lease nonce"
		}
		return nil, fmt.Errorf("%s: %s (status %q)", op, msg, l.Status)
	}
	return l, nil
}

// AcquireLease takes a machine's lease for ttl (rounded up to whole seconds;
// zero leaves Fly's default). The TTL and description go in the JSON body,
// the documented form. If someone else holds the lease the error matches
// ErrConflict. Not re-sent after an ambiguous failure (a re-sent acquire
// would conflict with the lease the first one may have taken).
func (c *Client) AcquireLease(ctx context.Context, app, id string, ttl time.Duration, description string) (*Lease, error) {
	if err := checkIDs("acquire lease", app, id); err != nil {
		return nil, err
	}
	var out Lease
	r := &request{action: "lease_acquire", method: http.MethodPost, path: machinePath(app, id) + "/lease",
		body: CreateLeaseRequest{TTL: ttlSeconds(ttl), Description: description}, out: &out, policy: unsentOnly}
	if err := c.do(ctx, r); err != nil {
		return nil, fmt.Errorf("acquire lease on machine %s: %w", id, err)
	}
	return checkLease(fmt.Sprintf("acquire lease on machine %s", id), &out)
}

// RefreshLease extends the lease identified by nonce to ttl from now.
func (c *Client) RefreshLease(ctx context.Context, app, id, nonce string, ttl time.Duration) (*Lease, error) {
	if err := checkIDs("refresh lease", app, id); err != nil {
		return nil, err
	}
	if nonce == "" {
		return nil, fmt.Errorf("refresh lease on machine %s: nonce is required", id)
	}
	var out Lease
	r := &request{action: "lease_refresh", method: http.MethodPost, path: machinePath(app, id) + "/lease",
		body: CreateLeaseRequest{TTL: ttlSeconds(ttl)}, nonce: nonce, out: &out}
	if err := c.do(ctx, r); err != nil {
		return nil, fmt.Errorf("refresh lease on machine %s: %w", id, err)
	}
	l, err := checkLease(fmt.Sprintf("refresh lease on machine %s", id), &out)
	if err != nil {
		return nil, err
	}
	if l.Nonce() != nonce {
		return nil, fmt.Errorf("refresh lease on machine %s: server returned a different nonce", id)
	}
	return l, nil
}

// ReleaseLease releases the lease identified by nonce.
func (c *Client) ReleaseLease(ctx context.Context, app, id, nonce string) error {
	if err := checkIDs("release lease", app, id); err != nil {
		return err
	}
	if nonce == "" {
		return fmt.Errorf("release lease on machine %s: nonce is required", id)
	}
	r := &request{action: "lease_release", method: http.MethodDelete, path: machinePath(app, id) + "/lease", nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("release lease on machine %s: %w", id, err)
	}
	return nil
}

// GetLease returns the machine's current lease; ErrNotFound when none is held.
func (c *Client) GetLease(ctx context.Context, app, id string) (*Lease, error) {
	if err := checkIDs("get lease", app, id); err != nil {
		return nil, err
	}
	var out Lease
	if err := c.do(ctx, &request{action: "lease_get", method: http.MethodGet, path: machinePath(app, id) + "/lease", out: &out}); err != nil {
		return nil, fmt.Errorf("get lease of machine %s: %w", id, err)
	}
	return &out, nil
}

// GetMetadata returns a machine's metadata.
func (c *Client) GetMetadata(ctx context.Context, app, id string) (map[string]string, error) {
	if err := checkIDs("get metadata", app, id); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if err := c.do(ctx, &request{action: "metadata_get", method: http.MethodGet, path: machinePath(app, id) + "/metadata", out: &out}); err != nil {
		return nil, fmt.Errorf("get metadata of machine %s: %w", id, err)
	}
	return out, nil
}

// GetMetadataKey returns one metadata value; ErrNotFound when the key is absent.
func (c *Client) GetMetadataKey(ctx context.Context, app, id, key string) (string, error) {
	if err := checkIDs("get metadata key", app, id); err != nil {
		return "", err
	}
	if key == "" {
		return "", fmt.Errorf("get metadata of machine %s: key is required", id)
	}
	var out MetadataValue
	if err := c.do(ctx, &request{action: "metadata_get_key", method: http.MethodGet, path: machinePath(app, id) + "/metadata/" + seg(key), out: &out}); err != nil {
		return "", fmt.Errorf("get metadata %s of machine %s: %w", key, id, err)
	}
	return out.Value, nil
}

// SetMetadata sets one metadata key. nonce is the lease nonce if one is held ("" otherwise).
func (c *Client) SetMetadata(ctx context.Context, app, id, key, value, nonce string) error {
	if err := checkIDs("set metadata", app, id); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("set metadata of machine %s: key is required", id)
	}
	r := &request{action: "metadata_set", method: http.MethodPost, path: machinePath(app, id) + "/metadata/" + seg(key),
		body: UpsertMetadataRequest{Value: value}, nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("set metadata %s of machine %s: %w", key, id, err)
	}
	return nil
}

// DeleteMetadata deletes one metadata key. nonce is the lease nonce if one is held.
func (c *Client) DeleteMetadata(ctx context.Context, app, id, key, nonce string) error {
	if err := checkIDs("delete metadata", app, id); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("delete metadata of machine %s: key is required", id)
	}
	r := &request{action: "metadata_delete", method: http.MethodDelete, path: machinePath(app, id) + "/metadata/" + seg(key), nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("delete metadata %s of machine %s: %w", key, id, err)
	}
	return nil
}

// UpdateMetadata sets and deletes several keys at once (PATCH); an empty
// value (or nil, sent as null) deletes a key.
// With req.MachineVersion a stale version fails with ErrPreconditionFailed.
//
// The batch endpoint is in Fly's OpenAPI document but neither fly-go nor
// flyctl uses it: when it answers 404 or 405 the client falls back (for
// this call and every later one) to one write per key, sets first, as they
// do. The fallback checks MachineVersion against the machine first, which
// is not atomic with the writes.
func (c *Client) UpdateMetadata(ctx context.Context, app, id string, req UpdateMetadataRequest, nonce string) error {
	if err := checkIDs("update metadata", app, id); err != nil {
		return err
	}
	if req.Metadata == nil {
		return errors.New("update metadata: metadata is required")
	}
	if !c.noBatchMetadata.Load() {
		r := &request{action: "metadata_update", method: http.MethodPatch, path: machinePath(app, id) + "/metadata", body: req, nonce: nonce}
		err := c.do(ctx, r)
		if err == nil {
			return nil
		}
		st := StatusCode(err)
		if st != http.StatusNotFound && st != http.StatusMethodNotAllowed {
			return fmt.Errorf("update metadata of machine %s: %w", id, err)
		}
		if _, gerr := c.GetMetadata(ctx, app, id); gerr != nil {
			// The machine itself is what is missing (or unreadable).
			return fmt.Errorf("update metadata of machine %s: %w", id, err)
		}
		c.log.Info("fly batch metadata endpoint unavailable; writing keys one by one", "status", st)
		c.noBatchMetadata.Store(true)
	}
	if req.MachineVersion != "" {
		m, err := c.GetMachine(ctx, app, id)
		if err != nil {
			return fmt.Errorf("update metadata of machine %s: check version: %w", id, err)
		}
		if m.InstanceID != req.MachineVersion {
			return fmt.Errorf("update metadata of machine %s: version %s is stale (now %s): %w", id, req.MachineVersion, m.InstanceID,
				&Error{StatusCode: http.StatusPreconditionFailed, Method: http.MethodPatch, Path: machinePath(app, id) + "/metadata", Message: "machine version is stale"})
		}
	}
	keys := make([]string, 0, len(req.Metadata))
	for k := range req.Metadata {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		di, dj := deletes(req.Metadata[keys[i]]), deletes(req.Metadata[keys[j]])
		if di != dj {
			return !di
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		v := req.Metadata[k]
		var err error
		if deletes(v) {
			err = c.DeleteMetadata(ctx, app, id, k, nonce)
			if errors.Is(err, ErrNotFound) {
				err = nil // the key was not there; the machine was (GetMetadata above)
			}
		} else {
			err = c.SetMetadata(ctx, app, id, k, *v, nonce)
		}
		if err != nil {
			return fmt.Errorf("update metadata of machine %s one key at a time: %w", id, err)
		}
	}
	return nil
}

func deletes(v *string) bool { return v == nil || *v == "" }
