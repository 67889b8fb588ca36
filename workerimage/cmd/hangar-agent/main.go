// Command hangar-agent runs inside each worker VM and serves one session:
// see package github.com/hangarhq/hangar/workerimage/agent and docs/protocol.md.
// It is configured by its environment; its only argument is --version.
package main

import (
	"fmt"
	"os"

	"github.com/hangarhq/hangar/workerimage/agent"
)

func main() {
	// --version lets an image be inspected without a session's environment
	// (the agent otherwise refuses to start without its configuration).
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "--version", "-version", "version":
			fmt.Println("hangar-agent", agent.Version)
			return
		}
	}
	os.Exit(agent.Main())
}
