package devenv

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/testbin"
)

// TestPrepareMinStandby: an unset MinStandby gives the dev pool one
// standby; an explicit 0 gives none (0 is a value, not "unset").
func TestPrepareMinStandby(t *testing.T) {
	agent := testbin.Path(t, testbin.Agent)
	zero := 0
	for _, c := range []struct {
		name string
		min  *int
		want int
	}{
		{"unset", nil, 1},
		{"zero", &zero, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			e, err := Prepare(ctx, Options{DataDir: t.TempDir(), AgentBinary: agent, MinStandby: c.min, Logger: hclog.NewNullLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			fc, err := e.Fly(hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			ms, err := fc.ListMachines(ctx, AppName, fly.ListMachinesOptions{})
			if err != nil {
				t.Fatal(err)
			}
			standbys := 0
			var spec *pool.Spec
			for i := range ms {
				m := &ms[i]
				switch {
				case pool.IsStandby(m):
					standbys++
				case pool.IsTemplate(m):
					s, err := pool.FromTemplate(AppName, m)
					if err != nil {
						t.Fatal(err)
					}
					spec = &s
				}
			}
			if spec == nil || spec.MinStandby != c.want || standbys != c.want {
				t.Fatalf("dev pool spec %+v with %d standbys; want min_standby %d and as many standbys", spec, standbys, c.want)
			}
		})
	}
}
