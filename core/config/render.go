package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
)

// masked replaces a secret in rendered output.
const masked = "***"

// secretName matches plugin config keys whose values are treated as secrets.
var secretName = regexp.MustCompile(`(?i)secret|key|token|password|passwd|credential|private`)

// Redacted returns a copy with every secret replaced by "***": all API keys,
// and plugin config values whose key looks like a secret's name.
func (c Config) Redacted() Config {
	out := c
	out.Auth.Keys = maskAll(c.Auth.Keys)
	out.Auth.RuntimeKeys = maskAll(c.Auth.RuntimeKeys)
	out.Storage.Postgres.DSN = MaskDSN(c.Storage.Postgres.DSN)
	if c.Cluster.Etcd.Password != "" {
		out.Cluster.Etcd.Password = masked
	}
	out.Plugins.Instances = make(map[string]Plugin, len(c.Plugins.Instances))
	for name, p := range c.Plugins.Instances {
		p.Config = redactMap(p.Config)
		out.Plugins.Instances[name] = p
	}
	return out
}

// dsnPassword finds the password of a key=value DSN: password=secret or
// password='se cret' (with \' and \\ escapes).
var dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)

// MaskDSN replaces the password of a PostgreSQL connection string, URL or
// key=value, with "***", keeping the rest readable. A string it cannot
// read is masked whole.
func MaskDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return masked
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), masked)
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", masked)
			u.RawQuery = q.Encode()
		}
		return strings.Replace(u.String(), url.QueryEscape(masked), masked, -1)
	}
	return dsnPassword.ReplaceAllString(dsn, "${1}"+masked)
}

// maskAll returns one mask per secret.
func maskAll(secrets []string) []string {
	out := make([]string, len(secrets))
	for i := range secrets {
		out[i] = masked
	}
	return out
}

func redactMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch {
		case secretName.MatchString(k):
			out[k] = masked
		default:
			if sub, ok := v.(map[string]any); ok {
				out[k] = redactMap(sub)
			} else {
				out[k] = v
			}
		}
	}
	return out
}

// Render returns the configuration as YAML with secrets masked.
func (c Config) Render() (string, error) {
	k := koanf.New(".")
	r := c.Redacted()
	if err := k.Load(structs.Provider(r, "koanf"), nil); err != nil {
		return "", fmt.Errorf("render config: %w", err)
	}
	// structs renders durations as nanoseconds; write them as text.
	for _, key := range k.Keys() {
		if d, ok := k.Get(key).(interface{ String() string }); ok {
			_ = k.Set(key, d.String())
		}
	}
	b, err := k.Marshal(yaml.Parser())
	if err != nil {
		return "", fmt.Errorf("render config: %w", err)
	}
	return string(b), nil
}
