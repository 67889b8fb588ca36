// Package tmux holds the terminal test of the hangar CLI: `hangar attach`
// runs inside a real tmux against a real `hangard dev` (daemon, Fly emulator
// and hangar-agent), typed into with send-keys and read with capture-pane.
package tmux
