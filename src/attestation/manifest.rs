//! Supply-chain manifests: Microchip-style signed lists of the parts delivered to a factory.
