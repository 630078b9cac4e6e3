// Builds zig-out/lib/libpersistentkv.so from cuda/ with nvcc (Zig 0.11).
//
//   zig build -Doptimize=ReleaseFast            all default GPU targets
//   zig build -Dcuda-arch=sm_90                 one target, for quick rounds
//   zig build test                              the bun test suite (builds first)
//   zig build plan-test                         the planner's native test (test/cuda/plan_test.cpp)
//
// Each source compiles in its own cached step (parallel, skipped when unchanged); every header is a
// dependency of every source, so editing one rebuilds. nvcc is $NVCC, else $CUDA_HOME/bin/nvcc, else PATH.
const std = @import("std");

// SASS for Ampere, Ada and Hopper plus compute_90 PTX, so newer GPUs JIT from it.
const default_gencode = [_][]const u8{
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_86,code=sm_86",
    "-gencode=arch=compute_89,code=sm_89",
    "-gencode=arch=compute_90,code=[sm_90,compute_90]",
};

pub fn build(b: *std.Build) !void {
    const optimize = b.standardOptimizeOption(.{});
    const cuda_arch = b.option([]const u8, "cuda-arch", "One GPU target such as sm_90 (default: sm_80, sm_86, sm_89, sm_90 + compute_90 PTX)");

    const nvcc = nvccPath(b);
    var gencode = std.ArrayList([]const u8).init(b.allocator);
    if (cuda_arch) |arch| {
        if (!std.mem.startsWith(u8, arch, "sm_")) {
            std.debug.print("-Dcuda-arch expects a target such as sm_90, got '{s}'\n", .{arch});
            return error.InvalidCudaArch;
        }
        try gencode.append(b.fmt("-gencode=arch=compute_{s},code=sm_{s}", .{ arch[3..], arch[3..] }));
    } else {
        try gencode.appendSlice(&default_gencode);
    }

    var flags = std.ArrayList([]const u8).init(b.allocator);
    try flags.appendSlice(&.{ "-std=c++17", "-Xcompiler=-fPIC", "-Xcompiler=-Wall", "-lineinfo", "--expt-relaxed-constexpr" });
    try flags.append(b.fmt("-I{s}", .{b.pathFromRoot("cuda/include")}));
    try flags.appendSlice(if (optimize == .Debug) &.{ "-O0", "-g" } else &.{"-O3"});
    try flags.appendSlice(gencode.items);

    var headers = std.ArrayList([]const u8).init(b.allocator);
    var sources = std.ArrayList([]const u8).init(b.allocator);
    var planner = std.ArrayList([]const u8).init(b.allocator);
    var dir = try b.build_root.handle.openIterableDir("cuda", .{});
    defer dir.close();
    var walker = try dir.walk(b.allocator);
    defer walker.deinit();
    while (try walker.next()) |entry| {
        if (entry.kind != .file) continue;
        const path = b.fmt("cuda/{s}", .{entry.path});
        const ext = std.fs.path.extension(path);
        if (std.mem.eql(u8, ext, ".h") or std.mem.eql(u8, ext, ".cuh")) try headers.append(path);
        if (std.mem.eql(u8, ext, ".cu") or std.mem.eql(u8, ext, ".cpp")) try sources.append(path);
        if (std.mem.startsWith(u8, path, "cuda/src/core/plan") and std.mem.eql(u8, ext, ".cpp")) try planner.append(path);
    }
    std.mem.sort([]const u8, sources.items, {}, lessThan);

    const link = b.addSystemCommand(&.{ nvcc, "-shared", "-cudart=static", "-o" });
    const library = link.addOutputFileArg("libpersistentkv.so");
    link.addArgs(gencode.items);
    for (sources.items) |source| {
        const compile = b.addSystemCommand(&.{nvcc});
        compile.addArgs(flags.items);
        compile.addArgs(&.{ "-x", if (std.mem.endsWith(u8, source, ".cu")) "cu" else "c++", "-c" });
        compile.addFileArg(.{ .path = source });
        compile.addArg("-o");
        const object = compile.addOutputFileArg(b.fmt("{s}.o", .{std.fs.path.stem(source)}));
        compile.extra_file_dependencies = headers.items;
        link.addFileArg(object);
    }
    const install = b.addInstallLibFile(library, "libpersistentkv.so");
    b.getInstallStep().dependOn(&install.step);

    // The planner's native test: its sources compiled for the host with the test (no GPU code), installed
    // as zig-out/bin/plan-test, which test/plan.test.ts runs.
    const plan_test = b.addSystemCommand(&.{ nvcc, "-std=c++17", "-O2", "-Xcompiler=-Wall" });
    plan_test.addArg(b.fmt("-I{s}", .{b.pathFromRoot("cuda/include")}));
    plan_test.addArgs(&.{ "-x", "c++" });
    plan_test.addFileArg(.{ .path = "test/cuda/plan_test.cpp" });
    for (planner.items) |source| plan_test.addFileArg(.{ .path = source });
    plan_test.addArg("-o");
    const plan_test_exe = plan_test.addOutputFileArg("plan-test");
    plan_test.extra_file_dependencies = headers.items;
    b.getInstallStep().dependOn(&b.addInstallBinFile(plan_test_exe, "plan-test").step);
    const run_plan_test = std.Build.Step.Run.create(b, "run plan-test");
    run_plan_test.addFileArg(plan_test_exe);
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

fn nvccPath(b: *std.Build) []const u8 {
    if (b.env_map.get("NVCC")) |nvcc| return nvcc;
    if (b.env_map.get("CUDA_HOME")) |home| return b.pathJoin(&.{ home, "bin", "nvcc" });
    return "nvcc";
}

fn lessThan(_: void, a: []const u8, b: []const u8) bool {
    return std.mem.lessThan(u8, a, b);
}
