package load

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Nodes is a cluster as the cluster scenarios see it: a Server per node,
// how many conversations each node owns, and a way to kill one. Starting
// and stopping the nodes is package target's job.
type Nodes struct {
	// Servers has one entry per node; Servers[i].NewConversation creates
	// a conversation through node i.
	Servers []Server
	// Owned reads how many conversations each node owns (has activated);
	// -1 for a node that is down.
	Owned func(ctx context.Context) ([]int64, error)
	// Kill ends node i at once (SIGKILL) and returns once it is gone.
	Kill func(i int) error
}

// maxOwnerTries bounds the conversations OwnedConversation creates to
// find one its caller wants: with three nodes, 64 misses in a row would
// take a placement that ignores two nodes.
const maxOwnerTries = 64

// Owner activates conversation conv by opening one socket to it through
// node via and reports which node owns it: the one whose count of owned
// conversations rose. Nothing else may activate conversations meanwhile.
func Owner(ctx context.Context, n Nodes, creds Credentials, via int, conv string) (int, error) {
	before, err := n.Owned(ctx)
	if err != nil {
		return -1, err
	}
	cl, err := newClient(n.Servers[via].Addr, creds)
	if err != nil {
		return -1, err
	}
	cred, err := cl.credential(0)
	if err != nil {
		return -1, err
	}
	c, err := cl.dial(ctx, conv, cred, nil)
	if err != nil {
		return -1, fmt.Errorf("activate conversation %s: %w", conv, err)
	}
	c.close()
	after, err := n.Owned(ctx)
	if err != nil {
		return -1, err
	}
	owner := -1
	for i := range min(len(before), len(after)) {
		if after[i] > before[i] {
			if owner >= 0 {
				return -1, fmt.Errorf("conversation %s: two nodes took an activation (%v -> %v)", conv, before, after)
			}
			owner = i
		}
	}
	if owner < 0 {
		return -1, fmt.Errorf("conversation %s: no node took its activation (%v -> %v); was it active already?", conv, before, after)
	}
	return owner, nil
}

// OwnedConversation creates conversations through node via until one is
// owned by a node want accepts, and returns it and its owner. The ones it
// passes over stay activated where they are, idle.
func OwnedConversation(ctx context.Context, n Nodes, creds Credentials, via int, want func(owner int) bool) (string, int, error) {
	var seen []int
	for range maxOwnerTries {
		conv, err := n.Servers[via].NewConversation(ctx)
		if err != nil {
			return "", -1, err
		}
		owner, err := Owner(ctx, n, creds, via, conv)
		if err != nil {
			return "", -1, err
		}
		if want(owner) {
			return conv, owner, nil
		}
		seen = append(seen, owner)
	}
	slices.Sort(seen)
	return "", -1, fmt.Errorf("no wanted owner in %d conversations (owners %v)", maxOwnerTries, slices.Compact(seen))
}

// OwnedBy returns a NewConversation for srv (a node's Server) that creates
// conversations through node via until one is owned by a node want
// accepts.
func OwnedBy(n Nodes, creds Credentials, via int, want func(owner int) bool) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		conv, _, err := OwnedConversation(ctx, n, creds, via, want)
		return conv, err
	}
}

// errNoSurvivor is a cluster with every node down.
var errNoSurvivor = errors.New("no node is up")
