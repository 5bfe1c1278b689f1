package core

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		raw  string
		want map[string][]string
	}{
		{"", map[string][]string{}},
		{"a=1", map[string][]string{"a": {"1"}}},
		{"a=1&a=2&b=", map[string][]string{"a": {"1", "2"}, "b": {""}}},
		{"k=a+b", map[string][]string{"k": {"a+b"}}},     // '+' is kept
		{"k=a%2Bb", map[string][]string{"k": {"a+b"}}},   // %2B too
		{"k=a%20b", map[string][]string{"k": {"a b"}}},   // %20 is a space
		{"k%2B=v", map[string][]string{"k+": {"v"}}},     // keys are unescaped
		{"flag", map[string][]string{"flag": {""}}},      // no '='
		{"a=%zz&b=2", map[string][]string{"b": {"2"}}},   // bad escape dropped
		{"a=1;b=2&c=3", map[string][]string{"c": {"3"}}}, // ';' pairs dropped
		{"&&a=1&", map[string][]string{"a": {"1"}}},
		{"a==b", map[string][]string{"a": {"=b"}}},
	}
	for _, tc := range tests {
		if got := ParseQuery(tc.raw); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseQuery(%q) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

func TestQueryValue(t *testing.T) {
	r := &Request{Query: ParseQuery("a=1&a=2&b=")}
	for name, want := range map[string]string{"a": "1", "b": "", "c": ""} {
		if got := r.QueryValue(name); got != want {
			t.Errorf("QueryValue(%q) = %q, want %q", name, got, want)
		}
	}
	if (&Request{}).QueryValue("a") != "" {
		t.Error("nil query")
	}
}

func TestPrincipal(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	all := &Principal{Subject: "s"}
	scoped := &Principal{Subject: "s", Scopes: []string{"Conv-1"}, Expiry: now}
	if !all.CanAccess("anything") || !scoped.CanAccess("conv-1") || scoped.CanAccess("conv-2") {
		t.Error("CanAccess")
	}
	if all.Expired(now) || scoped.Expired(now.Add(-time.Nanosecond)) || !scoped.Expired(now) {
		t.Error("Expired")
	}
}

func TestDecisionsAndHelpers(t *testing.T) {
	names := map[Decision]string{Abstain: "abstain", Allow: "allow", Deny: "deny", Error: "error", Decision(9): "unknown"}
	for d, want := range names {
		if d.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(d), d.String(), want)
		}
	}
	p := &Principal{Subject: "s"}
	err := errors.New("x")
	tests := []struct {
		got, want Result
	}{
		{Allowed(p), Result{Decision: Allow, Principal: p}},
		{Denied("r"), Result{Decision: Deny, Reason: "r"}},
		{Abstained(), Result{Decision: Abstain}},
		{Failed(err), Result{Decision: Error, Err: err}},
		{FailedByRequest(err), Result{Decision: Error, Err: err, RequestFault: true}},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("got %+v, want %+v", tc.got, tc.want)
		}
	}
}
