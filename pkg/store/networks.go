package store

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
)

// RememberNetwork records a delegate config list so that GC can reach its
// plugins even after every sandbox using it is gone. Already known configs
// cost one stat.
func (s *Store) RememberNetwork(conf []byte) error {
	sum := sha256.Sum256(conf)
	key := hex.EncodeToString(sum[:16]) + ".json"
	if _, ok := s.known.Load(key); ok {
		return nil
	}
	p := filepath.Join(s.dir, "networks", key)
	if _, err := os.Stat(p); err != nil {
		if err := s.writeAtomic(p, conf, true); err != nil {
			return err
		}
	}
	s.known.Store(key, true)
	return nil
}

// Networks returns every delegate config list ever remembered, keyed by file.
func (s *Store) Networks() (map[string][]byte, error) {
	dir := filepath.Join(s.dir, "networks")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			out[e.Name()] = raw
		}
	}
	return out, nil
}

// ForgetNetwork removes a remembered network config by its key.
func (s *Store) ForgetNetwork(key string) error {
	s.known.Delete(filepath.Base(key))
	return os.Remove(filepath.Join(s.dir, "networks", filepath.Base(key)))
}
