package mongodb

import (
	"fmt"
	"strings"

	"github.com/go-cap/cap/storage"
)

// Defaults of Options, CAP's names.
const (
	DefaultDatabase  = "cap"
	DefaultPublished = "cap.published"
	DefaultReceived  = "cap.received"
	// DefaultLock holds the leases of storage.Leaser, as CAP's lock
	// collection does.
	DefaultLock = "cap.lock"
	// DefaultClaims holds one small document per claim of a row, whose
	// unique _id makes two claims of the same due row exclusive (see the
	// package documentation).
	DefaultClaims = "cap.claims"
)

// Options configures a MongoDB storage. The zero value means the defaults.
type Options struct {
	// Database holds the collections. Defaults to DefaultDatabase ("cap").
	Database string
	// Published, Received, Lock and Claims name the collections. They
	// default to DefaultPublished, DefaultReceived, DefaultLock and
	// DefaultClaims.
	Published, Received, Lock, Claims string
}

func (o Options) withDefaults() (Options, error) {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.Database, DefaultDatabase)
	def(&o.Published, DefaultPublished)
	def(&o.Received, DefaultReceived)
	def(&o.Lock, DefaultLock)
	def(&o.Claims, DefaultClaims)
	if err := validateDatabase(o.Database); err != nil {
		return o, err
	}
	seen := map[string]string{}
	for _, c := range []struct{ kind, name string }{
		{"published collection", o.Published}, {"received collection", o.Received},
		{"lock collection", o.Lock}, {"claims collection", o.Claims},
	} {
		if err := validateCollection(c.kind, c.name); err != nil {
			return o, err
		}
		if other, ok := seen[c.name]; ok {
			return o, fmt.Errorf("mongodb: %w: %s and %s are both %q", storage.ErrInvalidIdentifier, other, c.kind, c.name)
		}
		seen[c.name] = c.kind
	}
	return o, nil
}

// validateDatabase applies MongoDB's rules for database names.
func validateDatabase(name string) error {
	if name == "" || len(name) > 63 || strings.ContainsAny(name, "/\\. \"$*<>:|?\x00") {
		return fmt.Errorf("mongodb: %w: database %q (1 to 63 characters, none of /\\. \"$*<>:|? or NUL)", storage.ErrInvalidIdentifier, name)
	}
	return nil
}

// validateCollection applies MongoDB's rules for collection names.
func validateCollection(kind, name string) error {
	if name == "" || len(name) > 120 || strings.ContainsAny(name, "$\x00") ||
		strings.HasPrefix(name, "system.") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
		return fmt.Errorf("mongodb: %w: %s %q (1 to 120 characters, no $ or NUL, not starting with system.)", storage.ErrInvalidIdentifier, kind, name)
	}
	return nil
}
