// The version of this package. The loader refuses a native library that reports another one (pkv_version),
// since its kernels and planner would not be the ones this code was tested with. test/package.test.ts checks
// that package.json, the platform package, the CHANGELOG and the native library all say the same.
export const VERSION = "0.1.0";

/** The ABI this package was written against (PKV_ABI_VERSION in the header). */
export const ABI_VERSION = 1;
