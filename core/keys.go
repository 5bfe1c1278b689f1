package core

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// KeySet is a set of valid API keys, held only as SHA-256 digests.
//
// Match hashes the candidate and compares it with every digest in constant
// time, so neither a key's content nor its position leaks through timing.
// Several keys may be valid at once, which is how rotation works.
type KeySet struct {
	digests [][sha256.Size]byte
}

// sha256Prefix marks a key given as the hex SHA-256 of the real key.
const sha256Prefix = "sha256:"

// NewKeySet parses keys given as plaintext or as "sha256:<64 hex digits>".
// Empty keys are refused. Errors name the key's index, never its value.
func NewKeySet(keys []string) (*KeySet, error) {
	ks := &KeySet{}
	for i, k := range keys {
		d, err := parseKey(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		ks.digests = append(ks.digests, d)
	}
	return ks, nil
}

func parseKey(k string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	if k == "" {
		return d, fmt.Errorf("empty key")
	}
	if rest, ok := strings.CutPrefix(k, sha256Prefix); ok {
		b, err := hex.DecodeString(rest)
		if err != nil || len(b) != sha256.Size {
			return d, fmt.Errorf("%s form needs exactly 64 hex digits", strings.TrimSuffix(sha256Prefix, ":"))
		}
		copy(d[:], b)
		return d, nil
	}
	return sha256.Sum256([]byte(k)), nil
}

// SharedKey reports whether a key of b (plaintext or sha256 form) is also
// in a, comparing digests, and the index in b of the first one. Malformed
// keys never match.
func SharedKey(a, b []string) (int, bool) {
	in := make(map[[sha256.Size]byte]bool, len(a))
	for _, k := range a {
		if d, err := parseKey(k); err == nil {
			in[d] = true
		}
	}
	for i, k := range b {
		if d, err := parseKey(k); err == nil && in[d] {
			return i, true
		}
	}
	return 0, false
}

// Len returns how many keys the set holds.
func (ks *KeySet) Len() int { return len(ks.digests) }

// Match reports whether candidate is one of the keys, in constant time with
// respect to the keys' contents.
func (ks *KeySet) Match(candidate string) bool {
	if ks == nil || candidate == "" {
		return false
	}
	d := sha256.Sum256([]byte(candidate))
	found := 0
	for i := range ks.digests {
		found |= subtle.ConstantTimeCompare(d[:], ks.digests[i][:])
	}
	return found == 1
}

// keyFingerprintPrefix starts every KeyFingerprint.
const keyFingerprintPrefix = "key:"

// KeyFingerprint names a key in logs and principals without revealing it:
// the first 12 hex digits of its SHA-256.
func KeyFingerprint(key string) string {
	d := sha256.Sum256([]byte(key))
	return keyFingerprintPrefix + hex.EncodeToString(d[:6])
}

// KeysFromEnv reads API keys the way the OpenHands agent-server does:
// OH_SESSION_API_KEYS as a JSON list; else OH_SESSION_API_KEYS_0, _1, ...
// up to the first gap; else the legacy SESSION_API_KEY. getenv is os.Getenv
// or a fake. Empty values are skipped.
func KeysFromEnv(getenv func(string) string) ([]string, error) {
	if raw := getenv("OH_SESSION_API_KEYS"); raw != "" {
		var keys []string
		if err := json.Unmarshal([]byte(raw), &keys); err != nil {
			return nil, fmt.Errorf("OH_SESSION_API_KEYS: not a JSON list of strings")
		}
		return nonEmpty(keys), nil
	}
	var keys []string
	for i := 0; ; i++ {
		v := getenv("OH_SESSION_API_KEYS_" + strconv.Itoa(i))
		if v == "" {
			break
		}
		keys = append(keys, v)
	}
	if len(keys) > 0 {
		return keys, nil
	}
	if v := getenv("SESSION_API_KEY"); v != "" {
		return []string{v}, nil
	}
	return nil, nil
}

func nonEmpty(in []string) []string {
	out := in[:0]
	for _, s := range in {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
