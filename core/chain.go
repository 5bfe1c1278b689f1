package core

import (
	"context"
	"errors"
	"fmt"
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
	return &Chain{route: route, auths: append([]Authenticator(nil), auths...)}, nil
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

// Authenticate runs the chain on req.
func (c *Chain) Authenticate(ctx context.Context, req *Request) Result {
	for _, a := range c.auths {
		if err := ctx.Err(); err != nil {
			return Result{Decision: Error, Err: fmt.Errorf("chain %q: %w", c.route, err), Authenticator: a.Name()}
		}
		res := a.Authenticate(ctx, req)
		res.Authenticator = a.Name()
		switch res.Decision {
		case Abstain:
			continue
		case Allow:
			if res.Principal == nil {
				return Result{Decision: Error, Err: fmt.Errorf("authenticator %q allowed without a principal", a.Name()), Authenticator: a.Name()}
			}
			if res.Principal.Authenticator == "" {
				res.Principal.Authenticator = a.Name()
			}
			return res
		case Deny:
			if res.Reason == "" {
				res.Reason = "invalid credentials"
			}
			return res
		case Error:
			if res.Err == nil {
				res.Err = errors.New("unspecified failure")
			}
			res.Err = fmt.Errorf("authenticator %q: %w", a.Name(), res.Err)
			return res
		default:
			return Result{Decision: Error, Err: fmt.Errorf("authenticator %q: unknown decision %d", a.Name(), res.Decision), Authenticator: a.Name()}
		}
	}
	return Result{Decision: Deny, Reason: ReasonNoCredentials}
}
