package fly

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// CreateApp creates an app in req.OrgSlug (optionally on its own isolated
// network). The body uses the spec's field name "name". After an ambiguous
// failure the client checks whether the app now exists (app names are
// globally unique) before sending the create again.
func (c *Client) CreateApp(ctx context.Context, req CreateAppRequest) (*App, error) {
	if req.Name == "" {
		return nil, errors.New("create app: name is required")
	}
	if req.OrgSlug == "" {
		return nil, fmt.Errorf("create app %s: org_slug is required", req.Name)
	}
	var out App
	var lastErr error
	for round := 1; round <= c.maxAttempts; round++ {
		// wait=true: Fly answers once the app is usable, as fly-go asks.
		r := &request{action: "app_create", method: http.MethodPost, path: "/apps", query: url.Values{"wait": {"true"}}, body: req, out: &out, policy: unsentOnly}
		err := c.do(ctx, r)
		if err == nil {
			c.markCreated(req.Name, "")
			if out.Name == "" {
				out.Name = req.Name
			}
			if out.Network == "" {
				out.Network = req.Network
			}
			if out.Organization == nil {
				out.Organization = &AppOrganization{Slug: req.OrgSlug}
			}
			return &out, nil
		}
		lastErr = err
		if !r.ambiguous || ctx.Err() != nil {
			break
		}
		// The create may have happened: look before sending it again.
		app, gerr := c.GetApp(ctx, req.Name)
		if gerr == nil {
			c.log.Debug("fly app create was ambiguous but the app exists; treating as created", "app", req.Name)
			return app, nil
		}
		if !errors.Is(gerr, ErrNotFound) {
			break
		}
		if werr := c.sleep(ctx, c.backoff(round)); werr != nil {
			break
		}
	}
	return nil, fmt.Errorf("create app %s: %w", req.Name, lastErr)
}

// GetApp returns an app. A 404 (ErrNotFound) means the name is free; 403
// (ErrForbidden) that it belongs to another organization.
func (c *Client) GetApp(ctx context.Context, name string) (*App, error) {
	if name == "" {
		return nil, errors.New("get app: name is required")
	}
	var out App
	if err := c.do(ctx, &request{action: "app_get", method: http.MethodGet, path: "/apps/" + seg(name), out: &out}); err != nil {
		return nil, fmt.Errorf("get app %s: %w", name, err)
	}
	return &out, nil
}

// ListApps lists the apps of an organization.
func (c *Client) ListApps(ctx context.Context, orgSlug string) ([]App, error) {
	if orgSlug == "" {
		return nil, errors.New("list apps: org slug is required")
	}
	var out ListAppsResponse
	q := url.Values{"org_slug": {orgSlug}}
	if err := c.do(ctx, &request{action: "app_list", method: http.MethodGet, path: "/apps", query: q, out: &out}); err != nil {
		return nil, fmt.Errorf("list apps of %s: %w", orgSlug, err)
	}
	return out.Apps, nil
}

// DeleteApp deletes an app. With force, Fly stops its machines and deletes
// at once.
func (c *Client) DeleteApp(ctx context.Context, name string, force bool) error {
	if name == "" {
		return errors.New("delete app: name is required")
	}
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	if err := c.do(ctx, &request{action: "app_delete", method: http.MethodDelete, path: "/apps/" + seg(name), query: q}); err != nil {
		return fmt.Errorf("delete app %s: %w", name, err)
	}
	return nil
}

// ListSecrets lists an app's secrets (names and digests; values only if
// the token may read them and showValues is set).
func (c *Client) ListSecrets(ctx context.Context, app string, showValues bool) ([]AppSecret, error) {
	if app == "" {
		return nil, errors.New("list secrets: app is required")
	}
	var q url.Values
	if showValues {
		q = url.Values{"show_secrets": {"true"}}
	}
	var out AppSecrets
	if err := c.do(ctx, &request{action: "secret_list", method: http.MethodGet, path: "/apps/" + seg(app) + "/secrets", query: q, out: &out}); err != nil {
		return nil, fmt.Errorf("list secrets of %s: %w", app, err)
	}
	return out.Secrets, nil
}

// SetSecret creates or replaces one app secret. Machines see it on their next
// update or start.
func (c *Client) SetSecret(ctx context.Context, app, name, value string) (*SetAppSecretResponse, error) {
	if app == "" || name == "" {
		return nil, errors.New("set secret: app and name are required")
	}
	var out SetAppSecretResponse
	r := &request{action: "secret_set", method: http.MethodPost, path: "/apps/" + seg(app) + "/secrets/" + seg(name),
		body: SetAppSecretRequest{Value: value}, out: &out}
	if err := c.do(ctx, r); err != nil {
		return nil, fmt.Errorf("set secret %s of %s: %w", name, app, err)
	}
	return &out, nil
}

// UpdateSecrets sets several secrets at once; a nil value deletes that
// secret (sent as null, which the spec does not declare; DeleteSecret is the
// declared way).
func (c *Client) UpdateSecrets(ctx context.Context, app string, values map[string]*string) (*AppSecretsUpdateResponse, error) {
	if app == "" {
		return nil, errors.New("update secrets: app is required")
	}
	var out AppSecretsUpdateResponse
	r := &request{action: "secret_update", method: http.MethodPost, path: "/apps/" + seg(app) + "/secrets",
		body: AppSecretsUpdateRequest{Values: values}, out: &out}
	if err := c.do(ctx, r); err != nil {
		return nil, fmt.Errorf("update secrets of %s: %w", app, err)
	}
	return &out, nil
}

// DeleteSecret deletes one app secret.
func (c *Client) DeleteSecret(ctx context.Context, app, name string) error {
	if app == "" || name == "" {
		return errors.New("delete secret: app and name are required")
	}
	r := &request{action: "secret_delete", method: http.MethodDelete, path: "/apps/" + seg(app) + "/secrets/" + seg(name)}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("delete secret %s of %s: %w", name, app, err)
	}
	return nil
}
