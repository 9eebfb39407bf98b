"""One folder per thing users do (reid, pretrain, geo, bridge), each registered once in :mod:`.registry`."""
