package claim

import "github.com/hangarhq/hangar/internal/agentapi"

// Hold keeps the credentials of session id, accepted by this replica, for
// its claim: they live only here until the claim hands them to the agent's
// init, and are never written anywhere.
func (cl *Claimer) Hold(id string, creds *agentapi.Credentials) {
	cl.mu.Lock()
	cl.creds[id] = creds
	cl.mu.Unlock()
}

// Holds reports whether this replica holds session id's credentials: its
// claim is this process's own.
func (cl *Claimer) Holds(id string) bool {
	_, ok := cl.takeCreds(id)
	return ok
}

func (cl *Claimer) takeCreds(id string) (*agentapi.Credentials, bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	c, ok := cl.creds[id]
	return c, ok
}

// Forget drops what this replica keeps for session id's claim (its
// credentials, a lost create, its refused starts): the claim is over, or
// its session ended.
func (cl *Claimer) Forget(id string) {
	cl.mu.Lock()
	delete(cl.creds, id)
	delete(cl.lostCreate, id) // the claim is over: nothing left to adopt
	delete(cl.refusedStarts, id)
	cl.mu.Unlock()
}

// ForgetCredentials drops every credential held: the replica stops, and
// claims that have not started die with it.
func (cl *Claimer) ForgetCredentials() {
	cl.mu.Lock()
	cl.creds = map[string]*agentapi.Credentials{}
	cl.mu.Unlock()
}
