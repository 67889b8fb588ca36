// Package metrics holds hangard's Prometheus metrics, on a registry of their
// own so that several daemons can run in one test process.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hangarhq/hangar/daemon/health"
)

// Metrics is the daemon's set of metrics.
type Metrics struct {
	Registry *prometheus.Registry
	// ClaimSeconds is the time from a claim's start to its session being
	// ready (or failing), by source (standby|clone|adopted) and outcome
	// (ready|failed|requeued: Fly refused to start the machine, so the
	// session went back in line for another).
	ClaimSeconds *prometheus.HistogramVec
	// SessionsFinished counts sessions this replica took to ended or failed.
	SessionsFinished *prometheus.CounterVec
	// BytesBrokered counts bytes spliced between clients and agents, by
	// direction (to_client|to_agent).
	BytesBrokered *prometheus.CounterVec
	// FlyCalls counts Fly Machines API attempts by action and outcome
	// (the HTTP status class, or "error" when no response arrived).
	FlyCalls *prometheus.CounterVec
	// Attachments is the number of WebSocket attachments open on this replica.
	Attachments prometheus.Gauge

	readiness *readinessCollector
}

// New makes the metrics. sessionsByState is called at every scrape and
// returns the number of sessions in each live state.
func New(sessionsByState func(ctx context.Context) (map[string]int, error)) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		ClaimSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "hangard", Name: "claim_duration_seconds",
			Help:    "Time from claim start to a ready (or failed) session.",
			Buckets: []float64{.1, .25, .5, 1, 2, 4, 8, 15, 30, 60, 120},
		}, []string{"source", "outcome"}),
		SessionsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hangard", Name: "sessions_finished_total",
			Help: "Sessions this replica took to a terminal state, by state.",
		}, []string{"state"}),
		BytesBrokered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hangard", Name: "bytes_brokered_total",
			Help: "Bytes spliced between clients and agents, by direction.",
		}, []string{"direction"}),
		FlyCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hangard", Name: "fly_api_calls_total",
			Help: "Fly Machines API attempts by action and outcome.",
		}, []string{"action", "outcome"}),
		Attachments: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "hangard", Name: "attachments",
			Help: "WebSocket attachments open on this replica.",
		}),
	}
	r.MustRegister(m.ClaimSeconds, m.SessionsFinished, m.BytesBrokered, m.FlyCalls, m.Attachments,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{fn: sessionsByState})
	m.readiness = &readinessCollector{}
	r.MustRegister(m.readiness)
	return m
}

// SetReadiness installs the function /metrics asks at every scrape for the
// replica's readiness (the same answer /readyz gives).
func (m *Metrics) SetReadiness(fn func(ctx context.Context) (ready bool, problems []health.Problem)) {
	m.readiness.mu.Lock()
	m.readiness.fn = fn
	m.readiness.mu.Unlock()
}

var (
	readyDesc   = prometheus.NewDesc("hangard_ready", "1 when this replica can take work (what /readyz answers 200 for), else 0.", nil, nil)
	problemDesc = prometheus.NewDesc("hangard_readiness_problem", "1 for each failing readiness check; severity is unready or degraded.", []string{"check", "severity"}, nil)
)

type readinessCollector struct {
	mu sync.Mutex
	fn func(ctx context.Context) (bool, []health.Problem)
}

func (c *readinessCollector) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc; ch <- problemDesc }

func (c *readinessCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	fn := c.fn
	c.mu.Unlock()
	if fn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ready, problems := fn(ctx)
	v := 0.0
	if ready {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v)
	seen := map[[2]string]bool{}
	for _, p := range problems {
		sev := "unready"
		if p.Degraded {
			sev = "degraded"
		}
		k := [2]string{p.Check, sev}
		if seen[k] {
			continue
		}
		seen[k] = true
		ch <- prometheus.MustNewConstMetric(problemDesc, prometheus.GaugeValue, 1, p.Check, sev)
	}
}

// ObserveFly is a fly.Options.OnResponse hook.
func (m *Metrics) ObserveFly(method, action string, status int, err error) {
	outcome := "error"
	if status > 0 {
		outcome = strconv.Itoa(status/100) + "xx"
	}
	m.FlyCalls.WithLabelValues(action, outcome).Inc()
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

var sessionsDesc = prometheus.NewDesc("hangard_sessions", "Live sessions by state (all replicas, from the store).", []string{"state"}, nil)

// stateCollector reads session counts from the store at scrape time, so
// every replica reports the same, true numbers.
type stateCollector struct {
	fn func(ctx context.Context) (map[string]int, error)
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- sessionsDesc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.fn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.fn(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(sessionsDesc, err)
		return
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(n), state)
	}
}
