package fly

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{
		`"10s"`:      10 * time.Second,
		`"1m30s"`:    90 * time.Second,
		`5000000000`: 5 * time.Second,
		`""`:         0,
	} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.Duration != want {
			t.Errorf("unmarshal %s = %v, %v; want %v", in, d.Duration, err, want)
		}
	}
	for _, bad := range []string{`"soon"`, `true`, `{}`} {
		var d Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("unmarshal %s accepted", bad)
		}
	}
	b, _ := json.Marshal(StopConfig{Signal: "SIGINT", Timeout: NewDuration(1500 * time.Millisecond)})
	if string(b) != `{"signal":"SIGINT","timeout":"1.5s"}` {
		t.Errorf("marshal = %s", b)
	}
}

func TestAutostopJSON(t *testing.T) {
	for in, want := range map[string]Autostop{`true`: AutostopStop, `false`: AutostopOff, `"suspend"`: AutostopSuspend, `"off"`: AutostopOff} {
		var a Autostop
		if err := json.Unmarshal([]byte(in), &a); err != nil || a != want {
			t.Errorf("unmarshal %s = %q, %v", in, a, err)
		}
	}
	var a Autostop
	if err := json.Unmarshal([]byte(`3`), &a); err == nil {
		t.Error("number accepted")
	}
	b, _ := json.Marshal(Service{Autostop: ptr(AutostopStop)})
	if string(b) != `{"autostop":"stop"}` {
		t.Errorf("marshal = %s", b)
	}
}

func TestPersistRootfsJSON(t *testing.T) {
	for in, want := range map[string]PersistRootfs{`0`: PersistRootfsNever, `1`: PersistRootfsAlways, `2`: PersistRootfsRestart, `"restart"`: PersistRootfsRestart} {
		var p PersistRootfs
		if err := json.Unmarshal([]byte(in), &p); err != nil || p != want {
			t.Errorf("unmarshal %s = %q, %v", in, p, err)
		}
	}
	var p PersistRootfs
	if err := json.Unmarshal([]byte(`7`), &p); err == nil {
		t.Error("7 accepted")
	}
}

// flyMachine is a machine as Fly's docs show it (machines-resource examples),
// with most config sections filled in.
const flyMachine = `{
  "id": "1857156b526dd8",
  "name": "aged-thunder-7371",
  "state": "started",
  "region": "ord",
  "instance_id": "01H28X6YMZ8JDY0QN4T8ZBE3MN",
  "version": "01H28X6YMZ8JDY0QN4T8ZBE3MN",
  "private_ip": "fdaa:2:45b:a7b:195:e229:8038:2",
  "config": {
    "image": "registry-1.docker.io/library/ubuntu:latest",
    "init": {"exec": ["/bin/sleep", "inf"], "tty": true, "swap_size_mb": 0},
    "env": {"APP_ENV": "production"},
    "metadata": {"fly_platform_version": "v2", "hangar_pool": "p1"},
    "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256, "kernel_args": ["a"]},
    "restart": {"policy": "on-failure", "max_retries": 10},
    "auto_destroy": true,
    "stop_config": {"signal": "SIGTERM", "timeout": "10s"},
    "services": [{
      "protocol": "tcp", "internal_port": 8080, "autostart": true, "autostop": "suspend", "min_machines_running": 0,
      "ports": [{"port": 443, "handlers": ["tls", "http"], "force_https": false}, {"start_port": 8000, "end_port": 8010}],
      "concurrency": {"type": "connections", "soft_limit": 20, "hard_limit": 25},
      "checks": [{"type": "http", "interval": "15s", "timeout": "2s", "grace_period": "5s", "method": "GET", "path": "/"}]
    }],
    "checks": {"alive": {"type": "tcp", "port": 8080, "interval": "15s", "timeout": "2s", "kind": "readiness",
      "headers": [{"name": "X", "values": ["1"]}]}},
    "files": [{"guest_path": "/etc/x", "raw_value": "aGVsbG8=", "mode": 420}],
    "mounts": [{"volume": "vol_1", "path": "/data", "size_gb": 1}],
    "dns": {"skip_registration": true, "nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "1"}]},
    "metrics": {"port": 9091, "path": "/metrics"},
    "processes": [{"exec": ["/bin/x"], "env_from": [{"env_var": "ID", "field_ref": "id"}], "secrets": [{"env_var": "S", "name": "S"}]}],
    "statics": [{"guest_path": "/app/public", "url_prefix": "/static"}],
    "rootfs": {"persist": "restart", "size_gb": 4},
    "schedule": "daily",
    "standbys": ["1857156b526dd9"],
    "containers": [{"name": "c", "image": "i", "depends_on": [{"name": "d", "condition": "healthy"}],
      "healthchecks": [{"name": "h", "kind": "liveness", "exec": {"command": ["true"]}, "interval": 5}]}]
  },
  "image_ref": {"registry": "registry-1.docker.io", "repository": "library/ubuntu", "tag": "latest", "digest": "sha256:abc", "labels": {}},
  "events": [{"id": "01H28X6YMZ8JDY0QN4T8ZBE3MP", "type": "exit", "status": "stopped", "source": "flyd", "timestamp": 1685966829633,
    "request": {"exit_event": {"exit_code": 0, "oom_killed": false, "requested_stop": true, "exited_at": "2023-06-05T12:07:09.623Z"}, "restart_count": 0}}],
  "checks": [{"name": "alive", "status": "passing", "output": "ok", "updated_at": "2023-06-05T12:07:09Z"}],
  "host_status": "ok",
  "created_at": "2023-06-05T12:06:55Z",
  "updated_at": "2023-06-05T12:07:09Z"
}`

func TestMachineRoundTrip(t *testing.T) {
	var m Machine
	dec := json.NewDecoder(strings.NewReader(flyMachine))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode Fly's machine: %v", err)
	}
	if m.Config.StopConfig.Timeout.Duration != 10*time.Second || *m.Config.Services[0].Autostop != AutostopSuspend ||
		m.Events[0].Request.ExitEvent == nil || !m.Events[0].Request.ExitEvent.RequestedStop || m.Events[0].Time().Year() != 2023 {
		t.Fatalf("decoded = %+v", m)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	json.Unmarshal([]byte(flyMachine), &a)
	json.Unmarshal(out, &b)
	dropZero(a)
	dropZero(b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("round trip changed the machine:\nin:  %v\nout: %v", a, b)
	}
}

// dropZero removes zero values, which omitempty may or may not drop
// (pointers keep an explicit zero); both sides are compared without them.
func dropZero(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			switch e := e.(type) {
			case bool:
				if !e {
					delete(x, k)
				}
			case float64:
				if e == 0 {
					delete(x, k)
				}
			case map[string]any:
				if len(e) == 0 {
					delete(x, k)
					continue
				}
				dropZero(e)
			default:
				dropZero(e)
			}
		}
	case []any:
		for _, e := range x {
			dropZero(e)
		}
	}
}
