package core

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func sha(s string) string {
	d := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(d[:])
}

func TestKeySetMatch(t *testing.T) {
	ks, err := NewKeySet([]string{"plain", sha("hashed"), "sha256:" + strings.ToUpper(strings.TrimPrefix(sha("upper"), "sha256:"))})
	if err != nil {
		t.Fatal(err)
	}
	if ks.Len() != 3 {
		t.Errorf("Len = %d", ks.Len())
	}
	tests := []struct {
		candidate string
		want      bool
	}{
		{"plain", true},
		{"hashed", true},
		{"upper", true},
		{"", false},
		{"Plain", false},
		{"plain ", false},
		{sha("hashed"), false}, // the digest itself is not a key
		{"other", false},
	}
	for _, tc := range tests {
		if got := ks.Match(tc.candidate); got != tc.want {
			t.Errorf("Match(%q) = %v, want %v", tc.candidate, got, tc.want)
		}
	}
	var nilSet *KeySet
	if nilSet.Match("plain") {
		t.Error("nil set matched")
	}
}

func TestNewKeySetErrors(t *testing.T) {
	tests := []struct {
		keys []string
		want string
	}{
		{[]string{"ok", ""}, "key 1: empty key"},
		{[]string{"sha256:abc"}, "key 0: sha256 form needs exactly 64 hex digits"},
		{[]string{"sha256:" + strings.Repeat("zz", 32)}, "key 0"},
	}
	for _, tc := range tests {
		_, err := NewKeySet(tc.keys)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.keys, err, tc.want)
		}
		for _, k := range tc.keys {
			if k != "" && err != nil && strings.Contains(err.Error(), k) {
				t.Errorf("error %q echoes the key", err)
			}
		}
	}
}

func TestKeyFingerprint(t *testing.T) {
	fp := KeyFingerprint("my-secret-key")
	if !strings.HasPrefix(fp, "key:") || len(fp) != len("key:")+12 || strings.Contains(fp, "my-secret-key") {
		t.Errorf("fingerprint %q", fp)
	}
	if fp != KeyFingerprint("my-secret-key") || fp == KeyFingerprint("my-secret-kez") {
		t.Error("fingerprint is not a stable function of the key")
	}
}

func TestKeysFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    []string
		wantErr bool
	}{
		{"none", nil, nil, false},
		{"json list", map[string]string{"OH_SESSION_API_KEYS": `["a","","b"]`}, []string{"a", "b"}, false},
		{"json wins over the rest", map[string]string{"OH_SESSION_API_KEYS": `["a"]`, "OH_SESSION_API_KEYS_0": "x", "SESSION_API_KEY": "y"}, []string{"a"}, false},
		{"bad json", map[string]string{"OH_SESSION_API_KEYS": `a,b`}, nil, true},
		{"indexed up to the first gap", map[string]string{"OH_SESSION_API_KEYS_0": "a", "OH_SESSION_API_KEYS_1": "b", "OH_SESSION_API_KEYS_3": "d"}, []string{"a", "b"}, false},
		{"indexed wins over legacy", map[string]string{"OH_SESSION_API_KEYS_0": "a", "SESSION_API_KEY": "y"}, []string{"a"}, false},
		{"indexed must start at 0", map[string]string{"OH_SESSION_API_KEYS_1": "b", "SESSION_API_KEY": "y"}, []string{"y"}, false},
		{"legacy", map[string]string{"SESSION_API_KEY": "y"}, []string{"y"}, false},
	}
	for _, tc := range tests {
		got, err := KeysFromEnv(func(k string) string { return tc.env[k] })
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v", tc.name, err)
			continue
		}
		if err != nil && strings.Contains(err.Error(), tc.env["OH_SESSION_API_KEYS"]) {
			t.Errorf("%s: error echoes the variable's value", tc.name)
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
