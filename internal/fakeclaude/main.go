// Command fakeclaude stands in for the Claude Code CLI in tests (see
// ../shared/claude-code/NOTES.md §6). Without -p it is a tiny line REPL that
// needs a terminal, like the real TUI; with -p it speaks the stream-json
// protocol of `claude -p --input-format stream-json --output-format
// stream-json --verbose`, argument checks included.
//
// REPL commands: /size, /exit, /crash (exit 3), /spam N, /alt, /noalt,
// /write FILE TEXT, /env NAME (prints set|unset, never a value), /pwd;
// anything else is echoed as "you said: <line>". Each line read is also
// appended to $FAKECLAUDE_INPUT_LOG when set. SIGINT prints "got SIGINT".
//
// stream-json magic words in a user message: TOOL, DENY, AUTHFAIL, NOLOGIN,
// HANG, CRASH, BIG <kb>, SLOW <ms>, WRITE <file> <text>.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	opts, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if !opts.print {
		os.Exit(repl())
	}
	os.Exit(streamJSON(opts))
}

type options struct {
	print, verbose, partial, replay bool
	inputFormat, outputFormat       string
	sessionID, resume, model        string
	permissionMode                  string
	positional                      []string
}

var valueFlags = map[string]bool{
	"--input-format": true, "--output-format": true, "--session-id": true, "--resume": true, "-r": true,
	"--model": true, "--permission-mode": true, "--max-turns": true, "--append-system-prompt": true,
	"--system-prompt": true, "--fallback-model": true, "--max-budget-usd": true, "--settings": true,
}
var variadicFlags = map[string]bool{
	"--allowedTools": true, "--allowed-tools": true, "--disallowedTools": true, "--disallowed-tools": true,
	"--mcp-config": true, "--add-dir": true, "--tools": true,
}
var boolFlags = map[string]bool{
	"-p": true, "--print": true, "--verbose": true, "--include-partial-messages": true,
	"--replay-user-messages": true, "--dangerously-skip-permissions": true, "-c": true, "--continue": true,
	"--fork-session": true, "--no-session-persistence": true, "--strict-mcp-config": true, "--bare": true,
}

func parseArgs(args []string) (*options, error) {
	o := &options{inputFormat: "text", outputFormat: "text"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.positional = append(o.positional, args[i+1:]...)
			break
		}
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case boolFlags[name]:
			switch name {
			case "-p", "--print":
				o.print = true
			case "--verbose":
				o.verbose = true
			case "--include-partial-messages":
				o.partial = true
			case "--replay-user-messages":
				o.replay = true
			}
		case valueFlags[name]:
			if !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("error: option '%s <value>' argument missing", name)
				}
				i++
				val = args[i]
			}
			switch name {
			case "--input-format":
				o.inputFormat = val
			case "--output-format":
				o.outputFormat = val
			case "--session-id":
				o.sessionID = val
			case "--resume", "-r":
				o.resume = val
			case "--model":
				o.model = val
			case "--permission-mode":
				o.permissionMode = val
			}
		case variadicFlags[name]:
			for i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
			}
		case strings.HasPrefix(a, "-"):
			return nil, fmt.Errorf("error: unknown option '%s'", a)
		default:
			o.positional = append(o.positional, a)
		}
	}
	if o.outputFormat == "stream-json" && o.print && !o.verbose {
		//nolint:staticcheck // ST1005: the real CLI's words, which callers may match
		return nil, fmt.Errorf("Error: When using --print, --output-format=stream-json requires --verbose")
	}
	if o.inputFormat == "stream-json" && o.outputFormat != "stream-json" {
		//nolint:staticcheck // ST1005: the real CLI's words, which callers may match
		return nil, fmt.Errorf("Error: --input-format=stream-json requires output-format=stream-json.")
	}
	return o, nil
}

// ---- REPL (pty mode) ----

func repl() int {
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err != nil {
		fmt.Fprintln(os.Stderr, "Error: Input must be provided either through stdin or as a prompt argument when using --print (no terminal)")
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT)
	go func() {
		for range sigs {
			fmt.Print("got SIGINT\r\n> ")
		}
	}()
	fmt.Print("\x1b[1mfake claude\x1b[0m REPL\r\n> ")
	logPath := os.Getenv("FAKECLAUDE_INPUT_LOG")
	r := bufio.NewReader(os.Stdin)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			fmt.Print("\r\nbye\r\n")
			return 0
		}
		line = strings.TrimRight(line, "\r\n")
		if logPath != "" {
			if f, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				fmt.Fprintln(f, line)
				f.Close()
			}
		}
		fields := strings.Fields(line)
		cmd := ""
		if len(fields) > 0 {
			cmd = fields[0]
		}
		switch cmd {
		case "/exit":
			return 0
		case "/crash":
			return 3
		case "/size":
			ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
			if err != nil {
				fmt.Printf("size: error %v\r\n", err)
			} else {
				fmt.Printf("size: %dx%d\r\n", ws.Row, ws.Col)
			}
		case "/spam":
			n := 100
			if len(fields) > 1 {
				n, _ = strconv.Atoi(fields[1])
			}
			w := bufio.NewWriterSize(os.Stdout, 64<<10)
			for i := 0; i < n; i++ {
				fmt.Fprintf(w, "spam line %d of %d\r\n", i, n)
			}
			w.Flush()
		case "/alt":
			fmt.Print("\x1b[?1049h\x1b[?2004h\x1b[?25l")
		case "/noalt":
			fmt.Print("\x1b[?25h\x1b[?2004l\x1b[?1049l")
		case "/write":
			if len(fields) < 3 {
				fmt.Print("usage: /write FILE TEXT\r\n")
				break
			}
			err := os.MkdirAll(filepath.Dir(fields[1]), 0o755)
			if err == nil {
				err = os.WriteFile(fields[1], []byte(strings.Join(fields[2:], " ")+"\n"), 0o644)
			}
			if err != nil {
				fmt.Printf("write %s: %v\r\n", fields[1], err)
				break
			}
			fmt.Printf("wrote %s\r\n", fields[1])
		case "/env":
			state := "unset"
			if len(fields) > 1 && os.Getenv(fields[1]) != "" {
				state = "set"
			}
			fmt.Printf("env %s=%s\r\n", strings.Join(fields[1:], ""), state)
		case "/pwd":
			wd, _ := os.Getwd()
			fmt.Printf("pwd: %s\r\n", wd)
		default:
			fmt.Printf("you said: %s\r\n", line)
		}
		fmt.Print("> ")
	}
}

// ---- stream-json (jsonl mode) ----

var out = bufio.NewWriterSize(os.Stdout, 64<<10)

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	out.Write(b)
	out.WriteByte('\n')
	out.Flush()
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func streamJSON(o *options) int {
	signal.Ignore(syscall.SIGPIPE)
	sid := o.sessionID
	if sid == "" && o.resume != "" {
		for _, u := range strings.Split(os.Getenv("FAKECLAUDE_UNKNOWN_SESSIONS"), ",") {
			if u != "" && u == o.resume {
				emit(map[string]any{"type": "result", "subtype": "error_during_execution", "is_error": true,
					"session_id": o.resume, "errors": []string{"No conversation found with session ID: " + o.resume}})
				return 1
			}
		}
		sid = o.resume
	}
	if sid == "" {
		sid = uuid()
	}
	model := o.model
	if model == "" {
		model = "claude-fake-1"
	}
	if o.inputFormat != "stream-json" {
		prompt := strings.Join(o.positional, " ")
		if o.outputFormat == "text" {
			fmt.Println("echo: " + prompt)
			return 0
		}
		turn(o, sid, model, prompt, nil)
		return 0
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var msg map[string]any
		if err := json.Unmarshal([]byte(line), &msg); err != nil {
			fmt.Fprintf(os.Stderr, "Error parsing streaming input line: %v\n", err)
			continue
		}
		switch msg["type"] {
		case "control_request":
			rid, _ := msg["request_id"].(string)
			emit(map[string]any{"type": "control_response", "response": map[string]any{"subtype": "success", "request_id": rid, "response": map[string]any{}}})
		case "user":
			text := userText(msg)
			if code, stop := turn(o, sid, model, text, msg); stop {
				return code
			}
		default:
			fmt.Fprintf(os.Stderr, "Error: unexpected message type %v\n", msg["type"])
		}
	}
	return 0
}

func userText(msg map[string]any) string {
	m, _ := msg["message"].(map[string]any)
	switch c := m["content"].(type) {
	case string:
		return c
	case []any:
		var parts []string
		for _, b := range c {
			if bm, ok := b.(map[string]any); ok && bm["type"] == "text" {
				s, _ := bm["text"].(string)
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, "")
	}
	return ""
}

// turn answers one user message; stop=true ends the process with code.
func turn(o *options, sid, model, text string, msg map[string]any) (int, bool) {
	keySource := "none"
	if os.Getenv("ANTHROPIC_API_KEY") != "" {
		keySource = "ANTHROPIC_API_KEY"
	}
	cwd, _ := os.Getwd()
	perm := o.permissionMode
	if perm == "" {
		perm = "default"
	}
	emit(map[string]any{"type": "system", "subtype": "init", "session_id": sid, "uuid": uuid(), "cwd": cwd, "model": model,
		"permissionMode": perm, "tools": []string{"Bash", "Edit", "Read"}, "mcp_servers": []any{}, "apiKeySource": keySource,
		"claude_code_version": "fake"})
	if o.inputFormat == "stream-json" {
		emit(map[string]any{"type": "system", "subtype": "status", "status": "requesting", "session_id": sid, "uuid": uuid()})
	}
	if o.replay && msg != nil {
		r := map[string]any{}
		for k, v := range msg {
			r[k] = v
		}
		r["isReplay"], r["session_id"], r["uuid"] = true, sid, uuid()
		emit(r)
	}
	fields := strings.Fields(text)
	word := ""
	if len(fields) > 0 {
		word = fields[0]
	}
	usage := map[string]any{"input_tokens": 10, "output_tokens": 5}
	result := func(subtype string, isErr bool, res string, turns int, extra map[string]any) {
		m := map[string]any{"type": "result", "subtype": subtype, "is_error": isErr, "result": res, "session_id": sid,
			"uuid": uuid(), "num_turns": turns, "duration_ms": 1, "duration_api_ms": 1, "total_cost_usd": 0, "usage": usage,
			"permission_denials": []any{}, "terminal_reason": "completed"}
		for k, v := range extra {
			m[k] = v
		}
		emit(m)
	}
	assistant := func(content []any) {
		emit(map[string]any{"type": "assistant", "message": map[string]any{"id": "msg_" + uuid()[:8], "type": "message",
			"role": "assistant", "model": model, "content": content, "stop_reason": nil, "usage": usage},
			"parent_tool_use_id": nil, "session_id": sid, "uuid": uuid()})
	}
	textBlock := func(s string) []any { return []any{map[string]any{"type": "text", "text": s}} }
	reply := "echo: " + text
	switch word {
	case "HANG":
		select {}
	case "CRASH":
		out.WriteString(`{"type":"assistant","mess`)
		out.Flush()
		return 2, true
	case "NOLOGIN":
		assistant(textBlock("Not logged in · Please run /login"))
		result("success", true, "Not logged in · Please run /login", 1, map[string]any{"terminal_reason": "api_error"})
		return 0, false
	case "AUTHFAIL":
		for i := 1; i <= 3; i++ {
			emit(map[string]any{"type": "system", "subtype": "api_retry", "attempt": i, "max_retries": 10, "retry_delay_ms": 10,
				"error_status": 401, "error": "authentication_failed", "session_id": sid, "uuid": uuid()})
		}
		result("success", true, "Invalid API key · Please run /login", 1, map[string]any{"terminal_reason": "api_error"})
		return 0, false
	case "TOOL", "DENY":
		id := "toolu_" + uuid()[:8]
		assistant([]any{map[string]any{"type": "tool_use", "id": id, "name": "Bash", "input": map[string]any{"command": "touch x"}}})
		extra := map[string]any{}
		if word == "DENY" {
			emit(map[string]any{"type": "system", "subtype": "permission_denied", "tool_name": "Bash", "tool_use_id": id,
				"message": "permission denied", "session_id": sid, "uuid": uuid()})
			emit(map[string]any{"type": "user", "message": map[string]any{"role": "user", "content": []any{map[string]any{
				"type": "tool_result", "tool_use_id": id, "content": "permission denied", "is_error": true}}}, "session_id": sid, "uuid": uuid()})
			extra["permission_denials"] = []any{map[string]any{"tool_name": "Bash", "tool_use_id": id, "tool_input": map[string]any{"command": "touch x"}}}
		} else {
			emit(map[string]any{"type": "user", "message": map[string]any{"role": "user", "content": []any{map[string]any{
				"type": "tool_result", "tool_use_id": id, "content": "", "is_error": false}}},
				"tool_use_result": map[string]any{"stdout": "", "stderr": "", "interrupted": false}, "session_id": sid, "uuid": uuid()})
		}
		assistant(textBlock(reply))
		result("success", false, reply, 2, extra)
		return 0, false
	case "BIG":
		kb := 64
		if len(fields) > 1 {
			kb, _ = strconv.Atoi(fields[1])
		}
		reply = strings.Repeat("x", kb*1024)
	case "WRITE":
		if len(fields) >= 3 {
			_ = os.WriteFile(fields[1], []byte(strings.Join(fields[2:], " ")+"\n"), 0o644)
		}
	}
	if o.partial {
		mid := "msg_" + uuid()[:8]
		se := func(ev map[string]any) {
			emit(map[string]any{"type": "stream_event", "event": ev, "session_id": sid, "uuid": uuid(), "parent_tool_use_id": nil, "api_message_id": mid})
		}
		se(map[string]any{"type": "message_start", "message": map[string]any{"id": mid, "role": "assistant", "model": model}})
		se(map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
		delay := 0
		if word == "SLOW" && len(fields) > 1 {
			delay, _ = strconv.Atoi(fields[1])
		}
		for _, chunk := range chunks(reply, 3) {
			if delay > 0 {
				time.Sleep(time.Duration(delay) * time.Millisecond)
			}
			se(map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": chunk}})
		}
		se(map[string]any{"type": "content_block_stop", "index": 0})
		se(map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "end_turn"}})
		se(map[string]any{"type": "message_stop"})
	}
	assistant(textBlock(reply))
	result("success", false, reply, 1, nil)
	return 0, false
}

func chunks(s string, n int) []string {
	if len(s) <= n {
		return []string{s}
	}
	size := (len(s) + n - 1) / n
	var out []string
	for len(s) > 0 {
		k := min(size, len(s))
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}
