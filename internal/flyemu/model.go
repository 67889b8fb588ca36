package flyemu

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/hangarhq/hangar/internal/fly"
)

// app is one Fly app.
type app struct {
	id         string
	name       string
	org        string
	network    string
	numericID  int64
	createdAt  time.Time
	machines   map[string]*machine
	secrets    map[string]*secret
	secretsVer int64
}

type secret struct {
	value            string
	created, updated time.Time
}

func (s *secret) digest() string {
	sum := sha256.Sum256([]byte(s.value))
	return hex.EncodeToString(sum[:8])
}

func (a *app) view() fly.App {
	n := 0
	for _, m := range a.machines {
		if m.state != fly.StateDestroyed {
			n++
		}
	}
	status := "pending"
	if n > 0 {
		status = "deployed"
	}
	return fly.App{
		ID:                a.id,
		Name:              a.name,
		Status:            status,
		Network:           a.network,
		InternalNumericID: a.numericID,
		MachineCount:      n,
		Organization:      &fly.AppOrganization{Name: a.org, Slug: a.org, InternalNumericID: 1},
	}
}

// intent records why the emulator is ending a machine's process, so that the
// exit handler knows what comes next.
type intent int

const (
	intentNone    intent = iota // the process exits by itself
	intentStop                  // stop requested
	intentRestart               // restart requested: launch a new process
	intentUpdate                // config replaced: launch with it (or stay stopped)
	intentDestroy               // destroy requested
	intentMigrate               // host migration: start again (on the "new host")
)

// event is a machine event plus the state the machine was in after it.
type event struct {
	fly.MachineEvent
	state string
}

// lease is a machine lease.
type lease struct {
	nonce       string
	expires     time.Time
	owner       string
	description string
	version     string
}

func (l *lease) view() fly.Lease {
	return fly.Lease{Status: "success", Data: &fly.LeaseData{
		Nonce:       l.nonce,
		ExpiresAt:   l.expires.Unix(),
		Owner:       l.owner,
		Description: l.description,
		Version:     l.version,
	}}
}

// machine is one Fly machine and the local process standing in for its VM.
type machine struct {
	app         *app
	id          string
	name        string
	region      string
	state       string
	instanceID  string
	versions    []string // every instance id, oldest first
	config      fly.MachineConfig
	skipSecrets bool
	createdAt   time.Time
	updatedAt   time.Time
	events      []event // oldest first
	lease       *lease
	net         machineNet // where the machine is on the network
	api         *localAPI  // its local API socket; nil once destroyed
	cordoned    bool
	hostDown    bool // SetHostReachable(false): Fly cannot reach the machine's host
	// snapshotLost: LoseSnapshot was called; the next resume boots cold.
	snapshotLost bool
	// startable is SetStartable's word; without it, Config.UnstartableAfterCreate decides.
	startable startable

	proc      *process
	frozen    bool   // proc is SIGSTOPped (suspended)
	gen       int    // bumped on every launch or resume; stale timers compare it
	intent    intent // why the running process is being ended
	skipAfter bool   // with intentUpdate: stay stopped instead of relaunching
	restarts  int    // automatic restarts since the last explicit start
	stopTimer *time.Timer
	changed   chan struct{} // closed and replaced on every change, for waiters
}

// startable is what SetStartable said of a machine.
type startable int

const (
	startableDefault startable = iota // Config.UnstartableAfterCreate decides
	startableYes
	startableNo
)

// leaseHeld returns the unexpired lease, dropping an expired one.
func (m *machine) leaseHeld(now time.Time) *lease {
	if m.lease != nil && !now.Before(m.lease.expires) {
		m.lease = nil
	}
	return m.lease
}

// view renders the machine as the API shows it. summary omits the parts Fly's
// list summary omits (config is reduced to image, guest and metadata).
func (m *machine) view(summary bool) fly.Machine {
	cfg := cloneConfig(m.config)
	out := fly.Machine{
		ID:         m.id,
		Name:       m.name,
		State:      m.state,
		Region:     m.region,
		InstanceID: m.instanceID,
		Version:    m.instanceID,
		PrivateIP:  m.net.addr.String(),
		ImageRef:   imageRef(m.config.Image),
		CreatedAt:  m.createdAt.UTC().Format(time.RFC3339),
		UpdatedAt:  m.updatedAt.UTC().Format(time.RFC3339),
	}
	if summary {
		out.Config = &fly.MachineConfig{Image: cfg.Image, Guest: cfg.Guest, Metadata: cfg.Metadata}
		return out
	}
	out.Config = &cfg
	out.HostStatus = fly.HostStatusOK
	if m.hostDown {
		// What fly-go documents: only the part of the config Fly still knows.
		out.Config = nil
		out.IncompleteConfig = &fly.MachineConfig{Image: cfg.Image, Guest: cfg.Guest, Metadata: cfg.Metadata}
		out.HostStatus = fly.HostStatusUnreachable
	}
	out.Cordoned = m.cordoned
	out.Events = m.eventViews(20)
	return out
}

// eventViews returns up to limit events, newest first.
func (m *machine) eventViews(limit int) []fly.MachineEvent {
	out := make([]fly.MachineEvent, 0, min(limit, len(m.events)))
	for i := len(m.events) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, m.events[i].MachineEvent)
	}
	return out
}

// cloneConfig deep-copies a config (responses must not share maps with the
// live machine).
func cloneConfig(c fly.MachineConfig) fly.MachineConfig {
	b, err := json.Marshal(c)
	if err != nil {
		return c
	}
	var out fly.MachineConfig
	if err := json.Unmarshal(b, &out); err != nil {
		return c
	}
	return out
}

// imageRef splits "registry/repo:tag@digest" the way Fly reports it.
func imageRef(image string) *fly.ImageRef {
	ref := &fly.ImageRef{}
	rest := image
	if i := strings.Index(rest, "@"); i >= 0 {
		ref.Digest = rest[i+1:]
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "/") {
		ref.Tag = rest[i+1:]
		rest = rest[:i]
	}
	if i := strings.Index(rest, "/"); i >= 0 && strings.ContainsAny(rest[:i], ".:") {
		ref.Registry = rest[:i]
		rest = rest[i+1:]
	} else {
		ref.Registry = "docker.io"
	}
	ref.Repository = rest
	if ref.Tag == "" && ref.Digest == "" {
		ref.Tag = "latest"
	}
	return ref
}

func newMachineID() string { return randomHex(14) }

func (e *Emulator) newULID() string {
	return ulid.MustNew(ulid.Timestamp(time.Now()), e.entropy).String()
}

var nameWords = [2][]string{
	{"aged", "billowing", "bold", "calm", "crimson", "damp", "dry", "falling", "frosty", "green", "hidden", "icy", "late", "lively", "misty", "morning", "muddy", "old", "patient", "proud", "quiet", "red", "restless", "shy", "silent", "small", "snowy", "spring", "still", "summer", "sweet", "twilight", "wandering", "weathered", "white", "wild", "winter", "young"},
	{"bird", "breeze", "brook", "bush", "cloud", "darkness", "dawn", "dew", "dream", "dust", "feather", "field", "fire", "flower", "fog", "forest", "frog", "glade", "grass", "haze", "hill", "lake", "leaf", "meadow", "moon", "morning", "night", "paper", "pine", "pond", "rain", "resonance", "river", "sea", "shadow", "sky", "snow", "sound", "star", "sun", "thunder", "tree", "violet", "water", "wave", "wind", "wood"},
}

func randomName() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	a := nameWords[0][int(b[0])%len(nameWords[0])]
	n := nameWords[1][int(b[1])%len(nameWords[1])]
	return fmt.Sprintf("%s-%s-%04d", a, n, (int(b[2])*37+int(b[0]))%10000)
}
