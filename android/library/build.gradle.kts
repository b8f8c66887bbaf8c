plugins {
    id("com.android.library") version "8.5.2"
}

android {
    namespace = "io.roam"
    compileSdk = 34

    defaultConfig {
        // android_setsocknetwork (the default socket binder) is API 23.
        minSdk = 23
        consumerProguardFiles("consumer-rules.pro")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    sourceSets["main"].apply {
        // The io.roam classes shared with the host JVM test (same native signatures).
        java.srcDir("../java/shared")
        // libroam_android.so per ABI, from `cargo ndk ... -o library/src/main/jniLibs`.
        jniLibs.srcDir("src/main/jniLibs")
    }
}
