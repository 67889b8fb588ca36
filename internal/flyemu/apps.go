package flyemu

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

var (
	appNameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// routes registers every endpoint. The second argument of handle names the
// rate-limit bucket of the action.
func (e *Emulator) routes() {
	e.mux = http.NewServeMux()
	e.handle("POST /v1/apps", "app_create", e.createApp)
	e.handle("GET /v1/apps", "app_list", e.listApps)
	e.handle("GET /v1/apps/{app}", "app_get", e.getApp)
	e.handle("DELETE /v1/apps/{app}", "app_delete", e.deleteApp)

	e.handle("GET /v1/apps/{app}/secrets", "secrets_list", e.listSecrets)
	e.handle("POST /v1/apps/{app}/secrets", "secrets_update", e.updateSecrets)
	e.handle("GET /v1/apps/{app}/secrets/{name}", "secret_get", e.getSecret)
	e.handle("POST /v1/apps/{app}/secrets/{name}", "secret_set", e.setSecret)
	e.handle("DELETE /v1/apps/{app}/secrets/{name}", "secret_delete", e.deleteSecret)

	e.handle("POST /v1/apps/{app}/machines", "machine_create", e.createMachine)
	e.handle("GET /v1/apps/{app}/machines", "machine_list", e.listMachines)
	e.handle("GET /v1/apps/{app}/machines/{id}", "machine_get", e.getMachine)
	e.handle("POST /v1/apps/{app}/machines/{id}", "machine_update", e.updateMachine)
	e.handle("DELETE /v1/apps/{app}/machines/{id}", "machine_destroy", e.destroyMachine)
	e.handle("POST /v1/apps/{app}/machines/{id}/start", "machine_start", e.startMachine)
	e.handle("POST /v1/apps/{app}/machines/{id}/stop", "machine_stop", e.stopMachine)
	e.handle("POST /v1/apps/{app}/machines/{id}/suspend", "machine_suspend", e.suspendMachine)
	e.handle("POST /v1/apps/{app}/machines/{id}/restart", "machine_restart", e.restartMachine)
	e.handle("POST /v1/apps/{app}/machines/{id}/signal", "machine_signal", e.signalMachine)
	e.handle("POST /v1/apps/{app}/machines/{id}/cordon", "machine_cordon", e.cordon(true))
	e.handle("POST /v1/apps/{app}/machines/{id}/uncordon", "machine_cordon", e.cordon(false))
	e.handle("POST /v1/apps/{app}/machines/{id}/exec", "machine_exec", e.execMachine)
	e.handle("GET /v1/apps/{app}/machines/{id}/wait", "machine_wait", e.waitMachine)
	e.handle("GET /v1/apps/{app}/machines/{id}/events", "machine_events", e.listEvents)
	e.handle("GET /v1/apps/{app}/machines/{id}/lease", "lease_get", e.getLease)
	e.handle("POST /v1/apps/{app}/machines/{id}/lease", "lease_acquire", e.acquireLease)
	e.handle("DELETE /v1/apps/{app}/machines/{id}/lease", "lease_release", e.releaseLease)
	e.handle("GET /v1/apps/{app}/machines/{id}/metadata", "metadata_get", e.getMetadata)
	e.handle("PUT /v1/apps/{app}/machines/{id}/metadata", "metadata_update", e.updateMetadata(true))
	e.handle("PATCH /v1/apps/{app}/machines/{id}/metadata", "metadata_update", e.updateMetadata(false))
	e.handle("GET /v1/apps/{app}/machines/{id}/metadata/{key}", "metadata_get", e.getMetadataKey)
	e.handle("POST /v1/apps/{app}/machines/{id}/metadata/{key}", "metadata_set", e.setMetadataKey)
	e.handle("DELETE /v1/apps/{app}/machines/{id}/metadata/{key}", "metadata_delete", e.deleteMetadataKey)

	e.oidcRoutes()

	e.handle("/", "", func(r *http.Request) response {
		return errResp(http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
}

// appLocked finds the app named in the path.
func (e *Emulator) appLocked(r *http.Request) (*app, response, bool) {
	name := r.PathValue("app")
	a := e.apps[name]
	if a == nil {
		return nil, errResp(http.StatusNotFound, fmt.Sprintf("app %q not found", name)), false
	}
	return a, response{}, true
}

func (e *Emulator) createApp(r *http.Request) response {
	var req struct {
		fly.CreateAppRequest
		AppName string `json:"app_name"`
	}
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	name := req.Name
	if name == "" {
		name = req.AppName
	}
	if name == "" {
		return errResp(http.StatusBadRequest, "app name is required (\"name\" or \"app_name\")")
	}
	if !appNameRE.MatchString(name) {
		return errResp(http.StatusBadRequest, fmt.Sprintf("invalid app name %q: use lowercase letters, digits and dashes (at most 63)", name))
	}
	org := req.OrgSlug
	if org == "" {
		org = e.cfg.Org
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apps[name] != nil {
		return errCode(http.StatusUnprocessableEntity, "Name has already been taken", fly.StatusNameTaken)
	}
	e.nextApp++
	network := req.Network
	a := &app{
		id:        randomHex(16),
		name:      name,
		org:       org,
		network:   network,
		numericID: e.nextApp,
		createdAt: time.Now(),
		machines:  map[string]*machine{},
		secrets:   map[string]*secret{},
	}
	e.apps[name] = a
	e.log.Info("app created", "app", name, "org", org)
	return jsonResp(http.StatusCreated, map[string]any{"id": a.id, "created_at": a.createdAt.UnixMilli()})
}

func (e *Emulator) listApps(r *http.Request) response {
	org := r.URL.Query().Get("org_slug")
	if org == "" {
		org = e.cfg.Org
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := fly.ListAppsResponse{Apps: []fly.App{}}
	for _, a := range e.apps {
		if a.org == org {
			out.Apps = append(out.Apps, a.view())
		}
	}
	sort.Slice(out.Apps, func(i, j int) bool { return out.Apps[i].Name < out.Apps[j].Name })
	out.TotalApps = len(out.Apps)
	return jsonResp(http.StatusOK, out)
}

func (e *Emulator) getApp(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	return jsonResp(http.StatusOK, a.view())
}

// deleteApp destroys every machine of the app (killing running ones, as
// force does on Fly) and frees the name.
func (e *Emulator) deleteApp(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	for _, m := range a.machines {
		e.destroyLocked(m)
	}
	delete(e.apps, a.name)
	e.log.Info("app deleted", "app", a.name)
	return response{status: http.StatusAccepted}
}

func (a *app) secretViews(show bool) []fly.AppSecret {
	out := []fly.AppSecret{}
	for name, s := range a.secrets {
		v := fly.AppSecret{
			Name:      name,
			Digest:    s.digest(),
			CreatedAt: s.created.UTC().Format(time.RFC3339),
			UpdatedAt: s.updated.UTC().Format(time.RFC3339),
		}
		if show {
			v.Value = s.value
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func showSecrets(r *http.Request) bool {
	b, _ := strconv.ParseBool(r.URL.Query().Get("show_secrets"))
	return b
}

func (e *Emulator) listSecrets(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	return jsonResp(http.StatusOK, fly.AppSecrets{Secrets: a.secretViews(showSecrets(r))})
}

func (e *Emulator) updateSecrets(r *http.Request) response {
	var req fly.AppSecretsUpdateRequest
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	for name := range req.Values {
		if !secretNameRE.MatchString(name) {
			return errResp(http.StatusBadRequest, fmt.Sprintf("invalid secret name %q", name))
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	now := time.Now()
	for name, v := range req.Values {
		if v == nil {
			delete(a.secrets, name)
			continue
		}
		a.setSecretLocked(name, *v, now)
	}
	a.secretsVer++
	return jsonResp(http.StatusOK, fly.AppSecretsUpdateResponse{Secrets: a.secretViews(false), Version: a.secretsVer})
}

func (a *app) setSecretLocked(name, value string, now time.Time) *secret {
	s := a.secrets[name]
	if s == nil {
		s = &secret{created: now}
		a.secrets[name] = s
	}
	s.value, s.updated = value, now
	return s
}

func (e *Emulator) getSecret(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	name := r.PathValue("name")
	for _, v := range a.secretViews(showSecrets(r)) {
		if v.Name == name {
			return jsonResp(http.StatusOK, v)
		}
	}
	return errResp(http.StatusNotFound, fmt.Sprintf("secret %q not found", name))
}

func (e *Emulator) setSecret(r *http.Request) response {
	name := r.PathValue("name")
	if !secretNameRE.MatchString(name) {
		return errResp(http.StatusBadRequest, fmt.Sprintf("invalid secret name %q", name))
	}
	var req fly.SetAppSecretRequest
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	s := a.setSecretLocked(name, req.Value, time.Now())
	a.secretsVer++
	return jsonResp(http.StatusCreated, fly.SetAppSecretResponse{
		Name:      name,
		Digest:    s.digest(),
		CreatedAt: s.created.UTC().Format(time.RFC3339),
		UpdatedAt: s.updated.UTC().Format(time.RFC3339),
		Version:   a.secretsVer,
	})
}

func (e *Emulator) deleteSecret(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	name := r.PathValue("name")
	if a.secrets[name] == nil {
		return errResp(http.StatusNotFound, fmt.Sprintf("secret %q not found", name))
	}
	delete(a.secrets, name)
	a.secretsVer++
	return jsonResp(http.StatusOK, fly.DeleteAppSecretResponse{Version: a.secretsVer})
}
