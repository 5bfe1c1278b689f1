package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment variable that sets a config key. "__"
// separates levels: AGENT_SERVER_SERVER__ADDR sets server.addr.
const EnvPrefix = "AGENT_SERVER_"

// Source says where to read configuration from. Later layers win: defaults,
// then File, then environment variables, then Overrides (from flags).
type Source struct {
	File      string            // a YAML file; "" for none
	Environ   []string          // "K=V" pairs; nil means os.Environ()
	Overrides map[string]string // dotted key -> value, e.g. "server.addr"
}

// Load reads, merges, decodes and validates the configuration. An unknown
// key or an invalid value is an error that names the key.
func Load(src Source) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(structs.Provider(Default(), "koanf"), nil); err != nil {
		return Config{}, fmt.Errorf("load defaults: %w", err)
	}
	if src.File != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(src.File), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("load %s: %w", src.File, err)
		}
		if err := resolvePaths(fk, src.File); err != nil {
			return Config{}, err
		}
		if err := k.Merge(fk); err != nil {
			return Config{}, fmt.Errorf("load %s: %w", src.File, err)
		}
	}
	environ := src.Environ
	if environ == nil {
		environ = os.Environ()
	}
	envp := env.Provider(".", env.Opt{
		Prefix:        EnvPrefix,
		EnvironFunc:   func() []string { return environ },
		TransformFunc: envKey,
	})
	if err := k.Load(envp, nil); err != nil {
		return Config{}, fmt.Errorf("load environment: %w", err)
	}
	if len(src.Overrides) > 0 {
		m := make(map[string]any, len(src.Overrides))
		for key, v := range src.Overrides {
			m[key] = v
		}
		if err := k.Load(confmap.Provider(m, "."), nil); err != nil {
			return Config{}, fmt.Errorf("load flags: %w", err)
		}
	}
	var cfg Config
	err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				mapstructure.StringToTimeDurationHookFunc(),
				mapstructure.StringToSliceHookFunc(","),
			),
			ErrorUnused:      true,
			WeaklyTypedInput: true,
			TagName:          "koanf",
			Result:           &cfg,
		},
	})
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", decodeError(err))
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// resolvePaths rewrites the relative paths a config file sets (the keys
// PathKeys lists) against the file's own directory, so that a file means
// the same wherever the server is started. Only the file's values are
// rewritten: paths from the environment and from flags stay relative to the
// working directory, as shells expect.
func resolvePaths(fk *koanf.Koanf, file string) error {
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return fmt.Errorf("resolve paths of %s: %w", file, err)
	}
	// audit.sink holds a path only in its file: form.
	if sink, ok := fk.Get("audit.sink").(string); ok {
		if p, isFile := strings.CutPrefix(sink, AuditFilePrefix); isFile && p != "" && !filepath.IsAbs(p) {
			if err := fk.Set("audit.sink", AuditFilePrefix+filepath.Join(dir, p)); err != nil {
				return fmt.Errorf("resolve audit.sink: %w", err)
			}
		}
	}
	patterns := PathKeys()
	for _, key := range fk.Keys() {
		if !matchesAny(key, patterns) {
			continue
		}
		v, ok := fk.Get(key).(string)
		if !ok || v == "" || filepath.IsAbs(v) {
			continue
		}
		if err := fk.Set(key, filepath.Join(dir, v)); err != nil {
			return fmt.Errorf("resolve %s: %w", key, err)
		}
	}
	return nil
}

// matchesAny reports whether the dotted key matches one of patterns, where
// a "*" segment matches any one segment.
func matchesAny(key string, patterns []string) bool {
	segs := strings.Split(key, ".")
	for _, p := range patterns {
		ps := strings.Split(p, ".")
		if len(ps) != len(segs) {
			continue
		}
		match := true
		for i := range ps {
			if ps[i] != "*" && ps[i] != segs[i] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// PathKeys lists the keys that hold file system paths (a `path:"file"` tag
// on the field), with "*" for a map's key: these are resolved against the
// config file's directory when the file sets them.
func PathKeys() []string {
	var out []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := prefix + f.Tag.Get("koanf")
			switch {
			case f.Tag.Get("path") == "file":
				out = append(out, name)
			case f.Type.Kind() == reflect.Struct:
				walk(name+".", f.Type)
			case f.Type.Kind() == reflect.Map && f.Type.Elem().Kind() == reflect.Struct:
				walk(name+".*.", f.Type.Elem())
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
	return out
}

// envKey maps AGENT_SERVER_AUTH__RPC_TIMEOUT to auth.rpc_timeout.
func envKey(k, v string) (string, any) {
	k = strings.TrimPrefix(k, EnvPrefix)
	if k == "" {
		return "", nil
	}
	return strings.ReplaceAll(strings.ToLower(k), "__", "."), v
}

var (
	invalidKeys = regexp.MustCompile(`^'([^']*)' has invalid keys: (.*)$`)
	badValue    = regexp.MustCompile(`^'([^']+)' (.*)$`)
	// quotedValue matches a value a decoder quoted back; a value may be a
	// secret (a key under the wrong field), so it never reaches the error.
	quotedValue = regexp.MustCompile(`(,? ?value: .*$)|("[^"]*")`)
)

// decodeError rewrites mapstructure's messages so each names its full
// dotted key: "unknown key server.bogus", "auth.rpc_timeout: invalid ...".
func decodeError(err error) error {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "* "))
		if line == "" || strings.HasPrefix(line, "decoding failed") {
			continue
		}
		if m := invalidKeys.FindStringSubmatch(line); m != nil {
			for _, k := range strings.Split(m[2], ", ") {
				if m[1] != "" {
					k = m[1] + "." + k
				}
				out = append(out, "unknown key "+k)
			}
			continue
		}
		if m := badValue.FindStringSubmatch(line); m != nil {
			out = append(out, m[1]+": "+quotedValue.ReplaceAllString(m[2], ""))
			continue
		}
		out = append(out, line)
	}
	return errors.New(strings.Join(out, "; "))
}

// Keys lists every dotted key the Config struct knows, for documentation
// checks. Map-valued keys end with ".*".
func Keys() []string {
	var out []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := prefix + f.Tag.Get("koanf")
			switch {
			case f.Type.Kind() == reflect.Struct:
				walk(name+".", f.Type)
			case f.Type.Kind() == reflect.Map:
				out = append(out, name+".*")
			default:
				out = append(out, name)
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
	return out
}

// ChangedKeys lists the keys, as Keys names them (a map as a whole, by
// its own key), whose values differ between a and b, but for those in
// skip and the keys below them.
func ChangedKeys(a, b Config, skip map[string]bool) []string {
	var out []string
	var walk func(prefix string, x, y reflect.Value)
	walk = func(prefix string, x, y reflect.Value) {
		for i := 0; i < x.NumField(); i++ {
			f := x.Type().Field(i)
			name := prefix + f.Tag.Get("koanf")
			switch {
			case skip[name]:
			case f.Type.Kind() == reflect.Struct:
				walk(name+".", x.Field(i), y.Field(i))
			case !reflect.DeepEqual(x.Field(i).Interface(), y.Field(i).Interface()):
				out = append(out, name)
			}
		}
	}
	walk("", reflect.ValueOf(a), reflect.ValueOf(b))
	return out
}
