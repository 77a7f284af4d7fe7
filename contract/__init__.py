"""What the data owner and the cloud both read: the on-disk formats, and the keyless bundle check.

The owner side (``pipeline``) writes these formats, the cloud side (``training``) reads them; neither
imports the other. Nothing here touches a secret key: a bundle is checked with the owner's public
signer file only.

    formats   cipher spec, normalization, dataset store attributes, shard records, checkpoint
              metadata, bundle manifest: typed, versioned, parsed and checked in one place
    query     what a query must be (a PNG naming its cipher), checked from its bytes by both sides
    signing   the owner's public signer file and the manifest's detached Ed25519 signature
    bundle    the bundle's layout and :func:`~contract.bundle.verify_bundle`
    errors    the one error type a user's input causes, and how entry points report it
"""
