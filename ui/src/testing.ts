// For tests: what a test set up must be there; if it is not, the test fails saying what
// was missing (rather than a `!` that fails later with "cannot read properties of null").

/** `value`, or a failure naming `what` when it is null or undefined. */
export function present<T>(value: T | null | undefined, what: string): T {
  if (value === null || value === undefined) throw new Error(`expected ${what}`);
  return value;
}
