package config

import (
	"fmt"

	"github.com/rewire-cni/rewire/pkg/nad"
)

// checkAuxiliaryChain refuses an auxiliaryCNIChainName that is not one
// directory name: it names a directory next to the cluster network's
// config, and must not lead anywhere else.
func (c *Config) checkAuxiliaryChain() error {
	if c.AuxiliaryCNIChainName == "" {
		return nil
	}
	if err := nad.ChainName(c.AuxiliaryCNIChainName); err != nil {
		return fmt.Errorf("config: auxiliaryCNIChainName: %w", err)
	}
	return nil
}
