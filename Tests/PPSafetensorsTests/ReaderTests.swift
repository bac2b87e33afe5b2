import XCTest
import PPTensor
@testable import PPSafetensors
