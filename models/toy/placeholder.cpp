namespace ddpm {}
