package bench

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// BurstByte asks the echo program for one burst of output; every other
// input byte is echoed back as is (like a full-screen app in raw mode, such
// as Claude Code, echoes keystrokes itself).
const BurstByte = 0x02

// EchoCommand is the name of the subcommand that runs the echo program.
const EchoCommand = "pty-echo"

// burstLine is what bursts are made of (64 bytes, so sizes are exact).
var burstLine = []byte("hangar bench bulk output 0123456789abcdefghijklmnopqrstuvwxyz..\r\n")

// EchoMain is the session command of the benchmark's sessions: it puts its
// terminal in raw mode, echoes every input byte and answers BurstByte with
// exactly burst bytes of output.
func EchoMain(args []string) error {
	fs := flag.NewFlagSet(EchoCommand, flag.ContinueOnError)
	burst := fs.Int("burst", 4<<20, "bytes of output per burst request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return fmt.Errorf("raw mode: %w", err)
		}
		defer term.Restore(int(os.Stdin.Fd()), old)
	}
	chunk := bytes.Repeat(burstLine, 1024) // 64 KiB
	in := make([]byte, 4096)
	for {
		n, err := os.Stdin.Read(in)
		if n > 0 {
			p := in[:n]
			for len(p) > 0 {
				i := bytes.IndexByte(p, BurstByte)
				if i < 0 {
					if _, err := os.Stdout.Write(p); err != nil {
						return err
					}
					break
				}
				if i > 0 {
					if _, err := os.Stdout.Write(p[:i]); err != nil {
						return err
					}
				}
				for left := *burst; left > 0; {
					k := min(left, len(chunk))
					if _, err := os.Stdout.Write(chunk[:k]); err != nil {
						return err
					}
					left -= k
				}
				p = p[i+1:]
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
