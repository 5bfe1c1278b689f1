package core

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// stub is an Authenticator that answers a fixed result and counts calls.
type stub struct {
	name  string
	res   Result
	calls int
}

func (s *stub) Name() string { return s.name }

func (s *stub) Authenticate(context.Context, *Request) Result {
	s.calls++
	r := s.res
	if r.Principal != nil {
		p := *r.Principal
		r.Principal = &p
	}
	return r
}

// settler is a stub that settles every request with its result, or
// none (unsettled) and counts its Settle calls.
type settler struct {
	stub
	unsettled bool
	settles   int
	used      int // Settled calls
}

func (s *settler) Settled(Result) { s.used++ }

func (s *settler) Settle(*Request) (Result, bool) {
	s.settles++
	if s.unsettled {
		return Result{}, false
	}
	return s.Authenticate(context.Background(), nil), true
}

var outcomes = []Decision{Abstain, Allow, Deny, Error}

func resultFor(d Decision) Result {
	switch d {
	case Allow:
		return Allowed(&Principal{Subject: "sub"})
	case Deny:
		return Denied("bad")
	case Error:
		return Failed(errors.New("down"))
	}
	return Abstained()
}

// TestChainEveryCombination runs every sequence of outcomes for chains of
// one to three authenticators and checks first-non-abstain semantics: the
// first Allow, Deny or Error decides, later members are never called, and
// all-abstain is Deny("no credentials").
func TestChainEveryCombination(t *testing.T) {
	var combos [][]Decision
	var gen func(prefix []Decision)
	gen = func(prefix []Decision) {
		if len(prefix) > 0 {
			combos = append(combos, append([]Decision(nil), prefix...))
		}
		if len(prefix) == 3 {
			return
		}
		for _, d := range outcomes {
			gen(append(prefix, d))
		}
	}
	gen(nil)
	if len(combos) != 4+16+64 {
		t.Fatalf("generated %d combinations", len(combos))
	}
	for _, combo := range combos {
		names := []string{"a", "b", "c"}[:len(combo)]
		stubs := make([]*stub, len(combo))
		auths := make([]Authenticator, len(combo))
		for i, d := range combo {
			stubs[i] = &stub{name: names[i], res: resultFor(d)}
			auths[i] = stubs[i]
		}
		c, err := NewChain(RouteEvents, auths...)
		if err != nil {
			t.Fatal(err)
		}
		// The expected outcome: the first non-abstain member decides.
		want, decider := Deny, -1
		for i, d := range combo {
			if d != Abstain {
				want, decider = d, i
				break
			}
		}
		got := c.Authenticate(context.Background(), &Request{})
		label := strings.Trim(strings.ReplaceAll(strings.Join(decisionNames(combo), ","), " ", ""), ",")
		// Settled by members that all settle, the chain answers the same.
		settlers := make([]Authenticator, len(combo))
		for i, d := range combo {
			settlers[i] = &settler{stub: stub{name: names[i], res: resultFor(d)}}
		}
		sc, _ := NewChain(RouteEvents, settlers...)
		if settled, ok := sc.Settle(&Request{}); !ok || !sameResult(settled, got) {
			t.Errorf("[%s]: Settle = %+v, %v; Authenticate = %+v", label, settled, ok, got)
		}
		if got.Decision != want {
			t.Errorf("[%s]: decision %s, want %s", label, got.Decision, want)
			continue
		}
		if decider < 0 {
			if got.Reason != ReasonNoCredentials || got.Authenticator != "" {
				t.Errorf("[%s]: all abstained but got %+v", label, got)
			}
		} else if got.Authenticator != names[decider] {
			t.Errorf("[%s]: decided by %q, want %q", label, got.Authenticator, names[decider])
		}
		switch got.Decision {
		case Allow:
			if got.Principal == nil || got.Principal.Authenticator != names[decider] {
				t.Errorf("[%s]: principal %+v lacks its authenticator", label, got.Principal)
			}
		case Error:
			if got.Err == nil || !strings.Contains(got.Err.Error(), names[decider]) {
				t.Errorf("[%s]: err %v does not name the authenticator", label, got.Err)
			}
		}
		for i, s := range stubs {
			wantCalls := 1
			if decider >= 0 && i > decider {
				wantCalls = 0
			}
			if s.calls != wantCalls {
				t.Errorf("[%s]: %s called %d times, want %d", label, s.name, s.calls, wantCalls)
			}
		}
	}
}

func decisionNames(ds []Decision) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func TestChainNormalisesOddResults(t *testing.T) {
	tests := []struct {
		name  string
		res   Result
		want  Decision
		check func(t *testing.T, r Result)
	}{
		{"allow without principal is an error", Result{Decision: Allow}, Error, func(t *testing.T, r Result) {
			if !strings.Contains(r.Err.Error(), "without a principal") {
				t.Errorf("err = %v", r.Err)
			}
		}},
		{"deny without reason gets one", Result{Decision: Deny}, Deny, func(t *testing.T, r Result) {
			if r.Reason != "invalid credentials" {
				t.Errorf("reason = %q", r.Reason)
			}
		}},
		{"error without err gets one", Result{Decision: Error}, Error, func(t *testing.T, r Result) {
			if r.Err == nil {
				t.Error("err is nil")
			}
		}},
		{"unknown decision is an error", Result{Decision: Decision(42)}, Error, func(t *testing.T, r Result) {
			if !strings.Contains(r.Err.Error(), "unknown decision") {
				t.Errorf("err = %v", r.Err)
			}
		}},
		{"a principal's own authenticator is kept", Allowed(&Principal{Subject: "s", Authenticator: "upstream"}), Allow, func(t *testing.T, r Result) {
			if r.Principal.Authenticator != "upstream" {
				t.Errorf("authenticator = %q", r.Principal.Authenticator)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := NewChain(RouteREST, &stub{name: "x", res: tc.res})
			got := c.Authenticate(context.Background(), &Request{})
			if got.Decision != tc.want {
				t.Fatalf("decision %s, want %s", got.Decision, tc.want)
			}
			tc.check(t, got)
			sc, _ := NewChain(RouteREST, &settler{stub: stub{name: "x", res: tc.res}})
			settled, ok := sc.Settle(&Request{})
			if !ok || settled.Decision != tc.want {
				t.Fatalf("Settle: decision %s (%v), want %s", settled.Decision, ok, tc.want)
			}
			tc.check(t, settled)
		})
	}
}

// sameResult compares what a chain decided: decision, reason, deciding
// authenticator, principal and error text.
func sameResult(a, b Result) bool {
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	return a.Decision == b.Decision && a.Reason == b.Reason && a.Authenticator == b.Authenticator &&
		reflect.DeepEqual(a.Principal, b.Principal) && errText(a.Err) == errText(b.Err)
}

// Settle stops at the first member that cannot settle the request, or
// that is no Settler, and asks none after it: only Authenticate can
// decide then. Members before it that abstained do not decide.
func TestChainSettleStopsAtAMemberThatCannot(t *testing.T) {
	allow := Allowed(&Principal{Subject: "s"})
	tests := []struct {
		name    string
		members func() []Authenticator
		wantOK  bool
		want    Decision
		asked   int // Settle calls of the last member, a settler
	}{
		{"all settle", func() []Authenticator {
			return []Authenticator{&settler{stub: stub{name: "a", res: Abstained()}}, &settler{stub: stub{name: "b", res: allow}}}
		}, true, Allow, 1},
		{"the first cannot", func() []Authenticator {
			return []Authenticator{&settler{stub: stub{name: "a", res: allow}, unsettled: true}, &settler{stub: stub{name: "b", res: allow}}}
		}, false, 0, 0},
		{"the first is no Settler", func() []Authenticator {
			return []Authenticator{&stub{name: "a", res: allow}, &settler{stub: stub{name: "b", res: allow}}}
		}, false, 0, 0},
		{"an abstain, then one that cannot", func() []Authenticator {
			return []Authenticator{&settler{stub: stub{name: "a", res: Abstained()}}, &settler{stub: stub{name: "b", res: allow}, unsettled: true}}
		}, false, 0, 1},
		{"a deny before one that cannot", func() []Authenticator {
			return []Authenticator{&settler{stub: stub{name: "a", res: Denied("bad")}}, &settler{stub: stub{name: "b"}, unsettled: true}}
		}, true, Deny, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			members := tc.members()
			c, err := NewChain(RouteEvents, members...)
			if err != nil {
				t.Fatal(err)
			}
			res, ok := c.Settle(&Request{})
			if ok != tc.wantOK || (ok && res.Decision != tc.want) {
				t.Errorf("Settle = %s, %v; want %s, %v", res.Decision, ok, tc.want, tc.wantOK)
			}
			if got := members[1].(*settler).settles; got != tc.asked {
				t.Errorf("the second member was asked %d times, want %d", got, tc.asked)
			}
			// A member is told its answer was used only when the chain
			// settled: an abstain before one that cannot is not.
			for i, m := range members {
				s, ok := m.(*settler)
				if !ok {
					continue
				}
				want := 0
				if tc.wantOK && s.settles > 0 {
					want = 1
				}
				if s.used != want {
					t.Errorf("member %d told %d times its answer was used, want %d", i, s.used, want)
				}
			}
			if s, isStub := members[0].(*stub); isStub && s.calls != 0 {
				t.Errorf("Settle called Authenticate %d times", s.calls)
			}
		})
	}
}

func TestChainCancelledContextFailsClosed(t *testing.T) {
	s := &stub{name: "a", res: Allowed(&Principal{Subject: "s"})}
	c, _ := NewChain(RouteEvents, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := c.Authenticate(ctx, &Request{})
	if got.Decision != Error || !errors.Is(got.Err, context.Canceled) || s.calls != 0 {
		t.Errorf("got %+v after %d calls, want a context error and no call", got, s.calls)
	}
}

func TestNewChainRefusesBadMembers(t *testing.T) {
	a := &stub{name: "a"}
	tests := []struct {
		name  string
		auths []Authenticator
		want  string
	}{
		{"empty", nil, "no authenticators"},
		{"nil member", []Authenticator{a, nil}, "authenticator 1 is nil"},
		{"duplicate", []Authenticator{a, &stub{name: "a"}}, `"a" listed twice`},
	}
	for _, tc := range tests {
		if _, err := NewChain(RouteEvents, tc.auths...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	c, err := NewChain(RouteREST, a, &stub{name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Route() != RouteREST || strings.Join(c.Names(), ",") != "a,b" {
		t.Errorf("route %s names %v", c.Route(), c.Names())
	}
}

var _ Authenticator = (*stub)(nil)

// bounded is a stub that declares itself Bounded.
type bounded struct{ stub }

func (*bounded) Bounded() {}

// A chain is Bounded only when every member is.
func TestChainBounded(t *testing.T) {
	tests := []struct {
		name  string
		auths []Authenticator
		want  bool
	}{
		{"one bounded", []Authenticator{&bounded{stub{name: "a"}}}, true},
		{"all bounded", []Authenticator{&bounded{stub{name: "a"}}, &bounded{stub{name: "b"}}}, true},
		{"one not", []Authenticator{&stub{name: "a"}}, false},
		{"the last not", []Authenticator{&bounded{stub{name: "a"}}, &stub{name: "b"}}, false},
		{"the first not", []Authenticator{&stub{name: "a"}, &bounded{stub{name: "b"}}}, false},
	}
	for _, tc := range tests {
		c, err := NewChain(RouteEvents, tc.auths...)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Bounded(); got != tc.want {
			t.Errorf("%s: Bounded() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// reader is a stub that declares what it reads.
type reader struct {
	stub
	query, headers []string
}

func (r *reader) Reads() ([]string, []string) { return r.query, r.headers }

func TestChainRetain(t *testing.T) {
	req := func() *Request {
		return &Request{
			Route:      RouteEvents,
			Path:       "/sockets/events/c1",
			PathParams: map[string]string{"conversation_id": "c1"},
			Query:      map[string][]string{"session_api_key": {"k"}, "resend_all": {"true"}},
			Header: http.Header{
				"X-Session-Api-Key": {"h"}, "Authorization": {"Bearer t"},
				"User-Agent": {"ua"}, "Cookie": {"c"},
			},
			RemoteAddr: "127.0.0.1:1",
		}
	}
	all := req()
	tests := []struct {
		name        string
		auths       []Authenticator
		wantQuery   map[string][]string
		wantHeaders http.Header
	}{
		{
			name: "readers keep only what they read, header names in any case",
			auths: []Authenticator{
				&reader{stub: stub{name: "q"}, query: []string{"session_api_key"}},
				&reader{stub: stub{name: "h"}, headers: []string{"x-session-api-key", "Authorization"}},
			},
			wantQuery:   map[string][]string{"session_api_key": {"k"}},
			wantHeaders: http.Header{"X-Session-Api-Key": {"h"}, "Authorization": {"Bearer t"}},
		},
		{
			name:  "readers of absent inputs keep nothing",
			auths: []Authenticator{&reader{stub: stub{name: "q"}, query: []string{"token"}, headers: []string{"X-Token"}}},
		},
		{
			name:        "one authenticator that is not a reader keeps everything",
			auths:       []Authenticator{&reader{stub: stub{name: "q"}, query: []string{"session_api_key"}}, &stub{name: "any"}},
			wantQuery:   all.Query,
			wantHeaders: all.Header,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := NewChain(RouteEvents, tt.auths...)
			if err != nil {
				t.Fatal(err)
			}
			orig := req()
			got := chain.Retain(orig)
			if !reflect.DeepEqual(got.Query, tt.wantQuery) {
				t.Errorf("query = %v, want %v", got.Query, tt.wantQuery)
			}
			if !reflect.DeepEqual(got.Header, tt.wantHeaders) {
				t.Errorf("header = %v, want %v", got.Header, tt.wantHeaders)
			}
			if got.Path != orig.Path || got.RemoteAddr != orig.RemoteAddr || got.PathParams["conversation_id"] != "c1" {
				t.Errorf("retained %+v lost the route parts of %+v", got, orig)
			}
			// The copy shares nothing the handshake may reuse.
			orig.PathParams["conversation_id"] = "changed"
			for _, v := range orig.Query {
				v[0] = "changed"
			}
			for _, v := range orig.Header {
				v[0] = "changed"
			}
			if got.PathParams["conversation_id"] != "c1" || !reflect.DeepEqual(got.Query, tt.wantQuery) || !reflect.DeepEqual(got.Header, tt.wantHeaders) {
				t.Errorf("the copy changed with the original: %+v", got)
			}
		})
	}
}
