// The Android side of roam: one library module (android/library). The Rust cdylib is built
// with cargo-ndk into library/src/main/jniLibs first (see README.md).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "roam-android"
include(":library")
