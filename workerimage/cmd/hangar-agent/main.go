// Command hangar-agent runs inside each worker VM and serves one session:
// see package github.com/hangarhq/hangar/workerimage/agent and docs/protocol.md.
package main

import (
	"os"

	"github.com/hangarhq/hangar/workerimage/agent"
)

func main() { os.Exit(agent.Main()) }
