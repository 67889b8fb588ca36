package agent_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/wire"
)

// TestReconnectLosesNothing drops the connection 100 times at random points
// while output streams and input is in flight. Reattaching with from = the
// rendered offset and resending input from input_applied must lose no
// output byte and apply no input byte twice.
func TestReconnectLosesNothing(t *testing.T) {
	a := startAgent(t, agentOpts{})
	inputLog := filepath.Join(t.TempDir(), "input.log")
	a.init(&agentapi.InitRequest{SessionID: "rc", Command: []string{a.fake},
		Env: map[string]string{"FAKECLAUDE_INPUT_LOG": inputLog}})

	// The whole input, split at random points across connections.
	var script strings.Builder
	var lines []string
	for i := 0; i < 150; i++ {
		l := fmt.Sprintf("msg-%03d", i)
		if i%3 == 0 {
			l = fmt.Sprintf("/spam %d", 20+i)
		}
		lines = append(lines, l)
		script.WriteString(l + "\r")
	}
	input := []byte(script.String())

	rng := rand.New(rand.NewPCG(1, 2))
	var transcript bytes.Buffer
	var sent, lastApplied int64
	for round := 0; round < 101; round++ {
		c := a.attach("rc", wire.SubprotocolPTY, wire.Attach{From: int64(transcript.Len()), InputFrom: sent, Role: wire.RoleWriter})
		if c.attached.From != int64(transcript.Len()) {
			t.Fatalf("round %d: attached from %d, want %d", round, c.attached.From, transcript.Len())
		}
		applied := c.attached.InputApplied
		if applied > sent || applied < lastApplied {
			t.Fatalf("round %d: input_applied %d, sent %d, previously applied %d", round, applied, sent, lastApplied)
		}
		lastApplied = applied
		// Resend what was not applied, then some new input.
		end := min(int64(len(input)), sent+int64(rng.IntN(40)))
		if round == 100 {
			end = int64(len(input))
		}
		if end > applied {
			c.sendRaw(websocket.MessageBinary, input[applied:end])
		}
		sent = max(sent, end)
		// Read for a random number of frames, sometimes none, then drop.
		frames := rng.IntN(12)
		for i := 0; i < frames || (round == 100 && !strings.Contains(transcript.String(), "you said: msg-149")); i++ {
			wait := 50 * time.Millisecond
			if round == 100 {
				wait = 10 * time.Second
			}
			typ, data, err := c.read(wait)
			if err != nil {
				if round == 100 {
					t.Fatalf("final round read: %v; transcript tail %q", err, tail(transcript.String(), 1500))
				}
				break
			}
			if typ == websocket.MessageBinary {
				transcript.Write(data)
				continue
			}
			m, _ := wire.Decode(data)
			if g, ok := m.(*wire.Gap); ok {
				t.Fatalf("round %d: unexpected gap %+v", round, g)
			}
		}
		c.conn.CloseNow()
	}
	// Let everything settle, then compare with the agent's own log.
	eventually(t, "all input applied", func() bool { return a.status("rc").InputApplied == int64(len(input)) })
	eventually(t, "output quiet", func() bool {
		h1 := a.status("rc").Head
		time.Sleep(100 * time.Millisecond)
		return a.status("rc").Head == h1
	})
	// Catch up on the rest of the output, then read everything from 0.
	c := a.attach("rc", wire.SubprotocolPTY, wire.Attach{From: int64(transcript.Len()), Role: wire.RoleReader})
	head := c.attached.Head
	for int64(transcript.Len()) < head {
		typ, data, err := c.read(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if typ == websocket.MessageBinary {
			transcript.Write(data)
		}
	}
	full := a.attach("rc", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleReader})
	full.waitFor("full replay", func() bool { return int64(full.out.Len()) >= head })
	if !bytes.Equal(full.out.Bytes()[:head], transcript.Bytes()[:head]) {
		t.Fatalf("transcript differs from the agent's output log (len %d vs %d)", transcript.Len(), full.out.Len())
	}
	got, err := os.ReadFile(inputLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(lines, "\n") + "\n"; string(got) != want {
		t.Fatalf("the program read different input than was typed:\n got %q\nwant %q", tail(string(got), 300), tail(want, 300))
	}
	for i := 1; i < 150; i++ {
		if i%3 != 0 {
			if n := strings.Count(transcript.String(), fmt.Sprintf("you said: msg-%03d\r", i)); n != 1 {
				t.Fatalf("msg-%03d answered %d times; transcript starts %q", i, n, transcript.String()[:min(2000, transcript.Len())])
			}
		}
	}
}
