package core

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// Authenticator checks one kind of credential.
//
// It answers Allow when its credential is present and valid, Deny when it is
// present and invalid, Abstain when it is absent, and Error when it cannot
// tell. Implementations must be safe for concurrent use.
type Authenticator interface {
	Name() string
	Authenticate(ctx context.Context, req *Request) Result
}

// ReasonNoCredentials is the Deny reason when every authenticator abstains.
const ReasonNoCredentials = "no credentials"

// Chain is an ordered list of authenticators compiled once from config.
//
// The first authenticator that does not abstain decides: Allow and Deny both
// end the chain, so a present but wrong credential is never retried with the
// next authenticator. Error also ends it and fails closed. If all abstain,
// the result is Deny(ReasonNoCredentials).
type Chain struct {
	route Route
	auths []Authenticator

	// bounded: every authenticator is Bounded (NewChain asks once).
	bounded bool

	// What Retain keeps, from the Readers when NewChain built the chain.
	readsAll           bool // an authenticator is not a Reader: keep everything
	readQuery, readHdr []string
}

// NewChain returns the chain for route. It refuses an empty chain, nil
// members and duplicate names.
func NewChain(route Route, auths ...Authenticator) (*Chain, error) {
	if len(auths) == 0 {
		return nil, fmt.Errorf("chain %q: no authenticators", route)
	}
	seen := make(map[string]bool, len(auths))
	for i, a := range auths {
		if a == nil {
			return nil, fmt.Errorf("chain %q: authenticator %d is nil", route, i)
		}
		if seen[a.Name()] {
			return nil, fmt.Errorf("chain %q: authenticator %q listed twice", route, a.Name())
		}
		seen[a.Name()] = true
	}
	c := &Chain{route: route, auths: append([]Authenticator(nil), auths...), bounded: true}
	for _, a := range c.auths {
		if _, ok := a.(Bounded); !ok {
			c.bounded = false
		}
	}
	for _, a := range c.auths {
		r, ok := a.(Reader)
		if !ok {
			c.readsAll, c.readQuery, c.readHdr = true, nil, nil
			break
		}
		q, h := r.Reads()
		c.readQuery, c.readHdr = append(c.readQuery, q...), append(c.readHdr, h...)
	}
	return c, nil
}

// Route returns the route the chain guards.
func (c *Chain) Route() Route { return c.route }

// Names returns the authenticators' names in order.
func (c *Chain) Names() []string {
	names := make([]string, len(c.auths))
	for i, a := range c.auths {
		names[i] = a.Name()
	}
	return names
}

// Bounded reports whether every authenticator of the chain is Bounded:
// Authenticate then returns once its context ends.
func (c *Chain) Bounded() bool { return c.bounded }

// Authenticate runs the chain on req.
func (c *Chain) Authenticate(ctx context.Context, req *Request) Result {
	for _, a := range c.auths {
		if err := ctx.Err(); err != nil {
			return Result{Decision: Error, Err: fmt.Errorf("chain %q: %w", c.route, err), Authenticator: a.Name()}
		}
		if res, done := conclude(a, a.Authenticate(ctx, req)); done {
			return res
		}
	}
	return Result{Decision: Deny, Reason: ReasonNoCredentials}
}

// Settle decides req at once, as Authenticate would, when every
// authenticator it reaches settles it (Settler); it reports false as soon
// as one cannot, and then only Authenticate can decide. Once the chain has
// settled, each member whose answer it used is told so (Settled).
func (c *Chain) Settle(req *Request) (Result, bool) {
	var used [4]settled // most chains; more grow the slice
	answered, res, ok := c.settle(req, used[:0])
	if ok {
		for _, a := range answered {
			a.by.Settled(a.res)
		}
	}
	return res, ok
}

// settled is a member's answer that Settle used.
type settled struct {
	by  Settler
	res Result
}

// settle is Settle before the members are told; it appends the answers
// it used to answered, and returns it (a slice, not a pointer to one, so
// that Settle's array stays on the stack).
func (c *Chain) settle(req *Request, answered []settled) ([]settled, Result, bool) {
	for _, a := range c.auths {
		s, ok := a.(Settler)
		if !ok {
			return answered, Result{}, false
		}
		res, ok := s.Settle(req)
		if !ok {
			return answered, Result{}, false
		}
		answered = append(answered, settled{s, res})
		if res, done := conclude(a, res); done {
			return answered, res, true
		}
	}
	return answered, Result{Decision: Deny, Reason: ReasonNoCredentials}, true
}

// conclude applies the chain's rules to a's result: done is false when a
// abstained and the next authenticator is asked.
func conclude(a Authenticator, res Result) (_ Result, done bool) {
	res.Authenticator = a.Name()
	switch res.Decision {
	case Abstain:
		return res, false
	case Allow:
		if res.Principal == nil {
			return Result{Decision: Error, Err: fmt.Errorf("authenticator %q allowed without a principal", a.Name()), Authenticator: a.Name()}, true
		}
		if res.Principal.Authenticator == "" {
			res.Principal.Authenticator = a.Name()
		}
		return res, true
	case Deny:
		if res.Reason == "" {
			res.Reason = "invalid credentials"
		}
		return res, true
	case Error:
		if res.Err == nil {
			res.Err = errors.New("unspecified failure")
		}
		res.Err = fmt.Errorf("authenticator %q: %w", a.Name(), res.Err)
		return res, true
	default:
		return Result{Decision: Error, Err: fmt.Errorf("authenticator %q: unknown decision %d", a.Name(), res.Decision), Authenticator: a.Name()}, true
	}
}

// Settler is implemented by an Authenticator that can sometimes decide a
// request at once, without blocking or calling out: from its decision
// cache, or by abstaining when the request carries none of its inputs.
// What Settle answers, Authenticate would have answered too.
type Settler interface {
	// Settle answers req at once, or reports false when only
	// Authenticate can; it changes nothing (a chain may still give up).
	Settle(req *Request) (Result, bool)
	// Settled is told, once per Settle, that the chain used res, the
	// answer Settle gave: for what Authenticate would have counted.
	Settled(res Result)
}

// Bounded is implemented by an Authenticator whose Authenticate returns
// once its context ends, whatever it waits for: a plugin process's call,
// say, which the host stops waiting for at the deadline. A caller that
// must not wait past a deadline can run a chain of them on its own
// goroutine; any other it runs on a goroutine of its own, and stops
// waiting for.
type Bounded interface {
	Authenticator
	// Bounded marks the implementation; it does nothing.
	Bounded()
}

// Reader is implemented by an Authenticator that reads a request's
// credential only from the named query parameters and headers (header names
// match in any case), plus the route, path, remote address, origin,
// subprotocols, first message and client certificates. A plugin process is
// one: it is sent only the inputs it declared. NewChain asks once; the answer must not change.
type Reader interface {
	Reads() (query, headers []string)
}

// Retain returns a copy of req to keep for running the chain again later
// (revalidation after a reload), sharing nothing with req's maps. When every
// authenticator is a Reader, the copy keeps only the query parameters and
// headers they read, so a long-lived connection does not pin its whole
// handshake; otherwise it keeps all of them.
func (c *Chain) Retain(req *Request) *Request {
	out := *req
	out.PathParams = maps.Clone(req.PathParams)
	out.ClientCertificates = slices.Clone(req.ClientCertificates)
	if c.readsAll {
		out.Query, out.Header = cloneValues(req.Query), http.Header(cloneValues(req.Header))
		return &out
	}
	out.Query, out.Header = nil, nil
	for _, name := range c.readQuery {
		if v, ok := req.Query[name]; ok {
			if out.Query == nil {
				out.Query = make(map[string][]string, 1)
			}
			out.Query[name] = slices.Clone(v)
		}
	}
	for k, v := range req.Header {
		if slices.ContainsFunc(c.readHdr, func(name string) bool { return strings.EqualFold(k, name) }) {
			if out.Header == nil {
				out.Header = make(http.Header, 1)
			}
			out.Header[k] = slices.Clone(v)
		}
	}
	return &out
}

// cloneValues copies a map of values and each slice in it; nil stays nil.
func cloneValues(m map[string][]string) map[string][]string {
	if m == nil {
		return nil
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}
