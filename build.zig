// Builds zig-out/lib/libpersistentkv.so from cuda/ (Zig 0.11).
//
//   zig build -Doptimize=ReleaseFast            CUDA + CPU backends, all default GPU targets (needs nvcc)
//   zig build -Dcuda-arch=sm_90                 one GPU target, for quick rounds
//   zig build -Dgpu=false                       the CPU backend only, with Zig's own C++ compiler (no CUDA)
//   zig build test                              the bun test suite (builds first)
//   zig build plan-test                         the planner's native test (test/cuda/plan_test.cpp)
//
// Each source compiles in its own cached step (parallel, skipped when unchanged); every header is a
// dependency of every source, so editing one rebuilds. nvcc is $NVCC, else $CUDA_HOME/bin/nvcc, else PATH.
// The CPU-only build compiles the host sources against cuda/src/cpu_only/ (a stand-in for the CUDA
// runtime header and the GPU entry points, all answering "no device") instead of the .cu files.
const std = @import("std");

// SASS for Ampere, Ada and Hopper plus compute_90 PTX, so newer GPUs JIT from it. Hopper's SASS is
// sm_90a: the shared-prefix kernel's warpgroup MMAs (wgmma) exist only there.
const default_gencode = [_][]const u8{
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_86,code=sm_86",
    "-gencode=arch=compute_89,code=sm_89",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_90,code=compute_90",
};
const cuda_version = "13";
const cpu_only_dir = "cuda/src/cpu_only/";

// Rough CPU-seconds of a build from nothing, measured on an x64 build machine (2 cores: 160 s for sm_90
// alone, 412 s for the default five targets): the CUDA build's part that every target shares (host code,
// the CPU backend) and nvcc's per GPU target, and Zig's C++ for the CPU-only build. Divided by the cores,
// they give the estimate the build prints.
const nvcc_seconds_shared = 194;
const nvcc_seconds_per_target = 126;
const cpu_only_seconds = 80;

pub fn build(b: *std.Build) !void {
    const optimize = b.standardOptimizeOption(.{});
    const target = b.standardTargetOptions(.{});
    const gpu = b.option(bool, "gpu", "Build the CUDA backend with nvcc (default true); false: the CPU backend only, no CUDA needed") orelse true;
    const cuda_arch = b.option([]const u8, "cuda-arch", "One GPU target such as sm_90, built as sm_90a (default: sm_80, sm_86, sm_89, sm_90a + compute_90 PTX)");

    var headers = std.ArrayList([]const u8).init(b.allocator);
    var sources = std.ArrayList([]const u8).init(b.allocator);
    try listSources(b, gpu, &headers, &sources);

    const cores = std.Thread.getCpuCount() catch 1;
    const library = if (gpu)
        try nvccLibrary(b, optimize, cuda_arch, headers.items, sources.items, cores)
    else
        cpuOnlyLibrary(b, optimize, target, sources.items, cores);
    const install = b.addInstallLibFile(library, "libpersistentkv.so");
    b.getInstallStep().dependOn(&install.step);

    // The planner's native test: the planner's sources and the test, host code only, through Zig's C++
    // (so it builds with or without CUDA); installed as zig-out/bin/plan-test, which test/plan.test.ts runs.
    const plan_test = b.addExecutable(.{ .name = "plan-test", .target = target, .optimize = .ReleaseSafe });
    plan_test.addIncludePath(.{ .path = cpu_only_dir });
    plan_test.addIncludePath(.{ .path = "cuda/include" });
    var planner = std.ArrayList([]const u8).init(b.allocator);
    try planner.append("test/cuda/plan_test.cpp");
    try planner.append("test/cuda/shared_plan_test.cpp");
    try planner.append("test/cuda/multiquery_plan_test.cpp");
    for (sources.items) |source|
        if (std.mem.startsWith(u8, source, "cuda/src/core/plan")) try planner.append(source);
    plan_test.addCSourceFiles(planner.items, &.{ "-std=c++17", "-Wall" });
    plan_test.linkLibCpp();
    b.getInstallStep().dependOn(&b.addInstallArtifact(plan_test, .{}).step);
    const run_plan_test = b.addRunArtifact(plan_test);
    run_plan_test.has_side_effects = true;
    b.step("plan-test", "Run the planner's native test").dependOn(&run_plan_test.step);

    // bun from npm (node_modules/.bin), which is on PATH only inside npm scripts; else bun from PATH.
    const npm_bun = b.pathFromRoot("node_modules/.bin/bun");
    const bun = if (std.fs.cwd().access(npm_bun, .{})) |_| npm_bun else |_| "bun";
    const tests = b.addSystemCommand(&.{ bun, "test" });
    tests.step.dependOn(b.getInstallStep());
    tests.has_side_effects = true;
    b.step("test", "Run the bun test suite against the built library").dependOn(&tests.step);
}

// Every source and header under cuda/: the .cu files only for the GPU build, cpu_only/ only without it.
fn listSources(b: *std.Build, gpu: bool, headers: *std.ArrayList([]const u8), sources: *std.ArrayList([]const u8)) !void {
    var dir = try b.build_root.handle.openIterableDir("cuda", .{});
    defer dir.close();
    var walker = try dir.walk(b.allocator);
    defer walker.deinit();
    while (try walker.next()) |entry| {
        if (entry.kind != .file) continue;
        const path = b.fmt("cuda/{s}", .{entry.path});
        if (gpu and std.mem.startsWith(u8, path, cpu_only_dir)) continue;
        const ext = std.fs.path.extension(path);
        if (std.mem.eql(u8, ext, ".h") or std.mem.eql(u8, ext, ".cuh")) try headers.append(path);
        if (std.mem.eql(u8, ext, ".cpp") or (gpu and std.mem.eql(u8, ext, ".cu"))) try sources.append(path);
    }
    std.mem.sort([]const u8, sources.items, {}, lessThan);
}

fn nvccLibrary(b: *std.Build, optimize: std.builtin.Mode, cuda_arch: ?[]const u8, headers: []const []const u8, sources: []const []const u8, cores: usize) !std.Build.LazyPath {
    const nvcc = findNvcc(b) orelse {
        // One line and no stack trace: this is a set-up problem, not a build bug.
        std.debug.print(
            "error: nvcc not found ({s}): the CUDA backend needs nvcc from CUDA {s}; set NVCC or CUDA_HOME, " ++
                "or build the CPU backend only with `npm run build:cpu` (zig build -Dgpu=false)\n",
            .{ nvccTried(b), cuda_version },
        );
        std.process.exit(1);
    };
    var gencode = std.ArrayList([]const u8).init(b.allocator);
    if (cuda_arch) |arch| {
        if (!std.mem.startsWith(u8, arch, "sm_")) {
            std.debug.print("-Dcuda-arch expects a target such as sm_90, got '{s}'\n", .{arch});
            return error.InvalidCudaArch;
        }
        // sm_90 means Hopper's arch-specific target, as in the default list.
        const code = if (std.mem.eql(u8, arch, "sm_90")) "90a" else arch[3..];
        try gencode.append(b.fmt("-gencode=arch=compute_{s},code=sm_{s}", .{ code, code }));
    } else {
        try gencode.appendSlice(&default_gencode);
    }
    const seconds = (nvcc_seconds_shared + nvcc_seconds_per_target * gencode.items.len) / cores;
    std.debug.print("building {s} (CUDA + CPU backends) with {s} for {s}: about {d} s on {d} cores from nothing, " ++
        "less for what changed\n", .{ installedLibrary(b), nvcc, cuda_arch orelse "sm_80, sm_86, sm_89, sm_90a + compute_90 PTX", seconds, cores });

    var flags = std.ArrayList([]const u8).init(b.allocator);
    try flags.appendSlice(&.{ "-std=c++17", "-Xcompiler=-fPIC", "-Xcompiler=-Wall", "-lineinfo", "--expt-relaxed-constexpr" });
    try flags.append(b.fmt("-I{s}", .{b.pathFromRoot("cuda/include")}));
    try flags.appendSlice(if (optimize == .Debug) &.{ "-O0", "-g" } else &.{"-O3"});
    try flags.appendSlice(gencode.items);

    const link = b.addSystemCommand(&.{ nvcc, "-shared", "-cudart=static", "-o" });
    const library = link.addOutputFileArg("libpersistentkv.so");
    link.addArgs(gencode.items);
    for (sources) |source| {
        const compile = b.addSystemCommand(&.{nvcc});
        compile.addArgs(flags.items);
        compile.addArgs(&.{ "-x", if (std.mem.endsWith(u8, source, ".cu")) "cu" else "c++", "-c" });
        compile.addFileArg(.{ .path = source });
        compile.addArg("-o");
        const object = compile.addOutputFileArg(b.fmt("{s}.o", .{std.fs.path.stem(source)}));
        compile.extra_file_dependencies = headers;
        link.addFileArg(object);
    }
    return library;
}

// The same C ABI with the CPU backend only: the host sources through Zig's clang and libc++ (linked
// statically, so the library needs only glibc at run time).
fn cpuOnlyLibrary(b: *std.Build, optimize: std.builtin.Mode, target: std.zig.CrossTarget, sources: []const []const u8, cores: usize) std.Build.LazyPath {
    std.debug.print("building {s} (CPU backend only, no CUDA) with zig c++: about {d} s on {d} cores from nothing, " ++
        "less for what changed\n", .{ installedLibrary(b), cpu_only_seconds / cores, cores });
    const lib = b.addSharedLibrary(.{ .name = "persistentkv", .target = target, .optimize = optimize });
    if (optimize != .Debug) lib.strip = true;
    // A GPU entry point without its stand-in is a link error here, not a failure to load later.
    lib.linker_allow_shlib_undefined = false;
    // cpu_only/ first, so its cuda_runtime.h stands in for CUDA's.
    lib.addIncludePath(.{ .path = cpu_only_dir });
    lib.addIncludePath(.{ .path = "cuda/include" });
    lib.addCSourceFiles(sources, &.{ "-std=c++17", "-Wall" });
    lib.linkLibCpp();
    return lib.getEmittedBin();
}

fn installedLibrary(b: *std.Build) []const u8 {
    return b.getInstallPath(.lib, "libpersistentkv.so");
}

// $NVCC, else $CUDA_HOME/bin/nvcc, else nvcc on PATH.
fn findNvcc(b: *std.Build) ?[]const u8 {
    if (namedNvcc(b)) |path| {
        std.fs.cwd().access(path, .{}) catch return null;
        return path;
    }
    return b.findProgram(&.{"nvcc"}, &.{}) catch null;
}

fn namedNvcc(b: *std.Build) ?[]const u8 {
    if (b.env_map.get("NVCC")) |nvcc| return nvcc;
    if (b.env_map.get("CUDA_HOME")) |home| return b.pathJoin(&.{ home, "bin", "nvcc" });
    return null;
}

fn nvccTried(b: *std.Build) []const u8 {
    if (b.env_map.get("NVCC")) |nvcc| return b.fmt("NVCC={s} does not exist", .{nvcc});
    if (b.env_map.get("CUDA_HOME")) |home| return b.fmt("CUDA_HOME={s} has no bin/nvcc", .{home});
    return "NVCC and CUDA_HOME are not set and PATH has none";
}

fn lessThan(_: void, a: []const u8, b: []const u8) bool {
    return std.mem.lessThan(u8, a, b);
}
