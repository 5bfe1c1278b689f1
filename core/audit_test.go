package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name          string
		res           Result
		decision, cls string
	}{
		{"allow", Allowed(&Principal{Subject: "s"}), DecisionAllow, ClassNone},
		{"all abstained", Result{Decision: Deny, Reason: ReasonNoCredentials}, DecisionDeny, ClassNoCredentials},
		{"plugin says no credentials", Result{Decision: Deny, Reason: ReasonNoCredentials, Authenticator: "jwt"}, DecisionDeny, ClassInvalid},
		{"expired", Result{Decision: Deny, Reason: ReasonExpired, Authenticator: "jwt"}, DecisionDeny, ClassExpired},
		{"token expired, any case", Result{Decision: Deny, Reason: "Token has EXPIRED", Authenticator: "oidc"}, DecisionDeny, ClassExpired},
		{"wrong key", Result{Decision: Deny, Reason: "invalid API key", Authenticator: "header"}, DecisionDeny, ClassInvalid},
		{"timeout", Failed(fmt.Errorf("authenticator %q: %w", "slow", context.DeadlineExceeded)), DecisionError, ClassTimeout},
		{"overloaded", Failed(fmt.Errorf("authenticator %q: plugin slow: %w: queue full", "slow", ErrOverloaded)), DecisionError, ClassOverloaded},
		{"crash", Failed(errors.New("plugin x is restarting")), DecisionError, ClassPluginError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, c := Classify(tt.res)
			if d != tt.decision || c != tt.cls {
				t.Errorf("Classify = %s/%s, want %s/%s", d, c, tt.decision, tt.cls)
			}
			if !slices.Contains(ReasonClasses, c) {
				t.Errorf("class %q is not in ReasonClasses", c)
			}
		})
	}
}

// A key's fingerprint is a hash of the key: the audit subject never is.
func TestAuditSubjectHidesKeyFingerprints(t *testing.T) {
	tests := []struct {
		p    *Principal
		want string
	}{
		{nil, ""},
		{&Principal{Subject: KeyFingerprint("k")}, "api_key"},
		{&Principal{Subject: KeyFingerprint("k"), Roles: []string{RoleRuntime}}, "runtime_key"},
		{&Principal{Subject: "alice@example.com"}, "alice@example.com"},
	}
	for _, tt := range tests {
		if got := AuditSubject(tt.p); got != tt.want {
			t.Errorf("AuditSubject(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

// The JSON field names are a contract with operators' SIEMs.
func TestAuditRecordFieldNames(t *testing.T) {
	rec := AuditRecord{Time: time.Unix(0, 0).UTC(), Event: AuditHandshake, Route: RouteEvents, RemoteAddr: "127.0.0.1:1",
		Conversation: "c", Plugin: "header", Decision: DecisionAllow, ReasonClass: ClassNone, Reason: "r", Subject: "s", Cached: true, RequestID: "id"}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"time", "event", "route", "remote_addr", "conversation", "plugin", "decision", "reason_class", "reason", "subject", "cached", "request_id"}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("fields = %v, want %v", got, want)
	}
}
