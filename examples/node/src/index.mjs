export { algorithmOf, createVerifier, DEFAULT_LEEWAY, DEFAULT_STALENESS, Refused, VerifiedKey } from './verifier.mjs';
export { latchkey } from './middleware.mjs';
